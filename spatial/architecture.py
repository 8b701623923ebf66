"""The ``spatial`` model's shape: what is trained here and how it meets SmolLM2.

    image 96x96 --CLIP tower (4 layers, 192 wide, patch 16)--> 36 patch tokens [36, 192]
        --LLaVA projector (Linear 192->576, GELU, Linear 576->576)--> 36 image tokens [36, 576]
    "<|im_start|>user\\n" + 36 image tokens + "\\n{question}<|im_end|>\\n<|im_start|>assistant\\n"
        --SmolLM2-135M-Instruct (30 layers, 576 wide, 9 heads / 3 KV heads; LoRA merged)--> "Left"

The features are the tower's last layer without CLS (``vision_feature_layer=-1``,
``"default"`` strategy): the tower is trained for this model, so its last layer is the
one that learned.  The ChatML template has no system prompt: shorter prompts, cheaper
training (SmolLM2's own template adds one by default).  The tokenizer is SmolLM2's
with one added special token, ``<image>`` (id 49152), and no BOS: SmolLM2's chat
prompts start with ``<|im_start|>`` themselves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenizers import AddedToken, Tokenizer, processors

IMAGE_TOKEN = "<image>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
PROMPT_TEMPLATE = "<|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
# The same rendering from the processor's chat template (the exporter renders it once into the manifest).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: The answer the model is trained to give, per relation: one word, so the first token's
#: probability is the confidence AdaptVis thresholds.
ANSWERS = {"on": "On", "under": "Under", "left_of": "Left", "right_of": "Right"}


@dataclass(frozen=True)
class VisionShape:
    image_size: int = 96          # the scenes' objects are >= 15 % of the side: 14 px and more here
    patch_size: int = 16          # 6 x 6 = 36 image tokens: a short prompt for the 30-layer decoder
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 3  # head dim 64
    intermediate_size: int = 768

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        return self.grid ** 2


@dataclass(frozen=True)
class LoraShape:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def vision_config(shape: VisionShape):
    from transformers import CLIPVisionConfig   # heavy, optional: transformers (the export extra)

    return CLIPVisionConfig(hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                            num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
                            image_size=shape.image_size, patch_size=shape.patch_size,
                            projection_dim=shape.hidden_size, hidden_act="quick_gelu")


def llava_config(shape: VisionShape, text_config, image_token_id: int):
    """A LlavaConfig around SmolLM2's LlamaConfig (vocabulary grown by the image token, untied head)."""
    from transformers import LlamaConfig, LlavaConfig   # heavy, optional: transformers (the export extra)

    text = LlamaConfig(**{k: v for k, v in text_config.to_dict().items()
                          if k not in ("architectures", "_name_or_path", "_model_name_or_path", "transformers_version",
                                       "dtype", "torch_dtype")})
    text.vocab_size = image_token_id + 1
    text.tie_word_embeddings = False     # the LM head is its own tensor in the checkpoint
    text.eos_token_id, text.bos_token_id, text.pad_token_id = 2, 1, 0
    return LlavaConfig(vision_config=vision_config(shape), text_config=text, image_token_index=image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=shape.image_tokens,
                       tie_word_embeddings=False)


def tokenizer_with_image_token(smol_tokenizer):
    """(tokenizers.Tokenizer, image token id): SmolLM2's BPE plus ``<image>``, no BOS added."""
    raw = Tokenizer.from_str(smol_tokenizer.backend_tokenizer.to_str())
    raw.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    raw.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    image_id = raw.token_to_id(IMAGE_TOKEN)
    eos_id = raw.token_to_id(EOS_TOKEN)
    if image_id != raw.get_vocab_size() - 1 or eos_id != 2:
        raise RuntimeError(f"unexpected SmolLM2 vocabulary: <image> -> {image_id}, {EOS_TOKEN} -> {eos_id}")
    return raw, image_id


def hf_tokenizer(raw):
    from transformers import PreTrainedTokenizerFast   # heavy, optional: transformers (the export extra)

    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=None, eos_token=EOS_TOKEN, unk_token=PAD_TOKEN, pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN}, model_input_names=["input_ids", "attention_mask"],
        chat_template=CHAT_TEMPLATE)


def processor(tokenizer, shape: VisionShape):
    from transformers import CLIPImageProcessor, LlavaProcessor   # heavy, optional: transformers (the export extra)

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": shape.image_size}, crop_size={"height": shape.image_size, "width": shape.image_size},
        do_center_crop=True, resample=3)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=shape.patch_size,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1)


def shapes_metadata(vision: VisionShape, lora: LoraShape) -> dict:
    return {"vision": asdict(vision), "lora": asdict(lora)}
