"""What a family brings to the one schedule of ``runtime/model.py``: objects it calls, chosen by the bundle's family.

    family                 sessions                     images (image -> feeds)   prompts' layout     stop ids
    llava                  runtime.sessions             image_input.ClipImages    prompt.FixedLayout  eos
                           .BundleSessions
    qwen2_5_vl, qwen3_vl   runtime.qwen_vl.sessions     qwen_vl.image_input       qwen_vl.layout      stop_token_ids
                           .QwenSessions                .QwenImages               .GridLayout

Each answers the same calls (``runtime/decoder_calls.py``, ``runtime/image_input.py``, ``runtime/prompt.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from graphs.manifest import DecoderShape

from .bundle import Bundle
from .image_input import ClipImages
from .prompt import PromptBuilder
from .qwen_vl.image_input import QwenImages
from .qwen_vl.layout import GridLayout
from .qwen_vl.positions import VisionTokens
from .qwen_vl.sessions import QwenSessions
from .sessions import BundleSessions


@dataclass(frozen=True, eq=False)
class ModelParts:
    sessions: object                 # BundleSessions | QwenSessions
    images: object                   # ClipImages | QwenImages
    prompts: PromptBuilder
    shape: DecoderShape
    stop_ids: frozenset[int]         # greedy decoding ends at any of these


def llava_parts(bundle: Bundle, providers, threads, decoder: str, cuda_graph: bool) -> ModelParts:
    m = bundle.manifest
    return ModelParts(BundleSessions(bundle, providers, threads, decoder, cuda_graph), ClipImages(m),
                      PromptBuilder.for_llava(Tokenizer.from_file(str(bundle.tokenizer)), m), m.decoder,
                      frozenset({m.eos_token_id}))


def qwen_parts(bundle: Bundle, providers, threads, decoder: str, cuda_graph: bool) -> ModelParts:
    m = bundle.manifest
    tokens = VisionTokens(m.tokens["image"], m.tokens["video"], m.tokens["vision_start"])
    layout = GridLayout(tokens, m.vision["merge_size"])
    prompts = PromptBuilder(Tokenizer.from_file(str(bundle.tokenizer)), m.prompt_template, m.image_placeholder,
                            tokens.image, layout)
    shape = DecoderShape(**{k: m.decoder[k] for k in DecoderShape.__dataclass_fields__})
    return ModelParts(QwenSessions(bundle, providers, threads, decoder, cuda_graph),
                      QwenImages.from_bundle(bundle.folder, m), prompts, shape, frozenset(m.stop_token_ids))


PARTS = {"llava": llava_parts, "qwen2_5_vl": qwen_parts, "qwen3_vl": qwen_parts}


def model_parts(bundle: Bundle, providers, threads, decoder: str, cuda_graph: bool) -> ModelParts:
    return PARTS[bundle.family.model_type](bundle, providers, threads, decoder, cuda_graph)
