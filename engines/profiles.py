"""The optimisation profile of each engine, from the contracts and the limits asked for.

One profile per graph, the decoder's included:

    symbolic dim      min   opt                       max
    batch             1     1                         1
    sequence          1     1                         max prompt     (a prefill: the whole prompt at most)
    past_sequence     0     image tokens + 64         max context - 1
    total_sequence    1     image tokens + 65         max context
    every other dim   the manifest's value

Why one and not two (prefill: sequence 1..max prompt, past 0; decode: sequence 1, past 1..max
context - 1): the runtime runs engines through ONNX Runtime's TensorRT provider, which binds every
call to the engine's first profile and never selects another (its compute function sets input shapes
and enqueues, with no ``setOptimizationProfileAsync``).  A two-profile engine would reject every
decode step there.  And the runtime's calls do not split that way anyway: the question is prefilled
after the cached image prefix (sequence > 1 *and* past > 0), as is AdaptVis's "after_image" pass.

``past_sequence`` min 0: the first prefill has an empty KV cache.  TensorRT supports empty tensors
(a dimension of 0) in inputs and profiles (its runtime accepts even a null address for an empty
input), so no dummy token pads the cache.  Not run on a GPU here.  ``opt`` is the decode step, the
most frequent call.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphs.contracts import bundle_contracts
from graphs.manifest import Manifest
from graphs.tensorrt_profiles import dim_ranges

from runtime.engine_layout import EngineError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Limits:
    max_prompt: int       # most tokens one call prefills (the whole prompt, image tokens included)
    max_context: int      # prompt + generated tokens


def engine_limits(manifest: Manifest, max_prompt: int | None = None, max_context: int | None = None) -> Limits:
    """The limits an engine is built for; defaults: the model's whole context.  EngineError if impossible."""
    longest = manifest.decoder.max_position_embeddings
    image = manifest.image_tokens_per_image
    context = longest if max_context is None else max_context
    if not 2 <= context <= longest:
        raise EngineError(f"--max-context must be between 2 and the model's context of {longest} tokens, got {context}")
    prompt = context if max_prompt is None else max_prompt
    if not image < prompt <= context:
        raise EngineError(f"--max-prompt must be more than the image's {image} tokens and at most --max-context "
                          f"({context}), got {prompt}")
    return Limits(prompt, context)


def engine_profiles(manifest: Manifest, limits: Limits) -> dict[str, list[dict[str, tuple[Shape, Shape, Shape]]]]:
    """graph -> [profile], a profile being input name -> (min, opt, max) shapes."""
    ranges = dict(dim_ranges(manifest))
    opt_past = min(ranges["past_sequence"][1], limits.max_context - 1)
    ranges.update({"sequence": (1, 1, limits.max_prompt),
                   "past_sequence": (0, opt_past, limits.max_context - 1),
                   "total_sequence": (1, opt_past + 1, limits.max_context)})
    profiles = {}
    for graph, contract in bundle_contracts(manifest.decoder.num_layers, manifest.has_attention_outputs).items():
        profiles[graph] = [{spec.name: tuple(tuple(ranges[d][k] for d in spec.dims) for k in range(3))
                            for spec in contract.inputs}]
    return profiles


def profiles_as_json(profiles: list[dict[str, tuple[Shape, Shape, Shape]]]) -> list[dict]:
    return [{name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in p.items()} for p in profiles]
