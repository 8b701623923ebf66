"""The documented tolerances: how far a quantized bundle's first-token logits may move from its source's.

Findings on the tiny test fixtures (2 decoder layers, hidden 64 / 48, random weights with the
q/k projections scaled for peaked attention and logits up to ~7.5), over 32 synthetic prompts
x alpha 0.5, 1, 2 and a per-layer-per-head alpha, block sizes 32 / 64 / 128, symmetric or not.
Each bound is about twice the worst value measured (for the cosine: twice its distance from 1), with
the vision graph and the LM head as exported (the defaults); see docs/quantize.md for the numbers.

``min_steering_cosine`` is the cosine between what alpha does to the logits in the quantized
bundle, ``q(alpha) - q(1)``, and in the source, ``s(alpha) - s(1)``: the steering survives when
it moves the logits the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Tolerance:
    max_abs_dlogits: float       # max |logits_q - logits_source| of the first answer token
    max_kl: float                # KL(p_source || p_quantized) of that token's distribution, nats
    min_steering_cosine: float   # cos(q(alpha) - q(1), s(alpha) - s(1)), alpha != 1

    def holds(self, max_abs_dlogits: float, max_kl: float, min_steering_cosine: float) -> bool:
        return (max_abs_dlogits <= self.max_abs_dlogits and max_kl <= self.max_kl
                and min_steering_cosine >= self.min_steering_cosine)

    def as_dict(self) -> dict:
        return asdict(self)


# worst measured on tiny / tiny-mha:   max |dlogits|   KL         steering cosine
#   fp16                               7.3e-3          3.2e-6     0.99997
#   int8 (block 32 .. 128)             9.0e-2          3.0e-4     0.9994
#   int4 (block 32 .. 128)             1.70            0.15       0.853
#   int8-dynamic (asym / symmetric)    0.218           1.5e-3     0.9932     (32 prompts; 2026-11-24)
TOLERANCES: dict[str, Tolerance] = {
    "fp16": Tolerance(max_abs_dlogits=0.02, max_kl=1e-5, min_steering_cosine=0.999),
    "int8": Tolerance(max_abs_dlogits=0.2, max_kl=1e-3, min_steering_cosine=0.99),
    "int4": Tolerance(max_abs_dlogits=3.5, max_kl=0.3, min_steering_cosine=0.7),
    "int8-dynamic": Tolerance(max_abs_dlogits=0.5, max_kl=3e-3, min_steering_cosine=0.985),
}
