"""How far an exported graph may be from PyTorch: tolerances that follow the model's own rounding.

A fixed absolute tolerance is wrong both ways: float32 rounding grows with the outputs' magnitude
and with depth (a real 30-layer model's logits sit 1-2e-4 from exact arithmetic, above the 1e-4
that a tiny model's 1e-6 would suggest), while a defect in a tiny model can hide under it.
So, per manifest key (``vision``, ``embed``, ``decoder``, ``decoder.present_relative``,
``decoder.attention``), in the key's own measure (absolute; the K/V cache relative to its largest
magnitude):

    fp32, measured    noise = max |PyTorch fp32 - PyTorch float64| over every parity case: the
    (the default)     same inputs, the same model run again in float64, one layer at a time
                      limit = NOISE_FACTOR x noise, at least FLOOR_ULPS float32 ulps of the
                      output's magnitude (an exact output, the embedding gather, has noise 0)
    fp32, by depth    where the float64 run does not fit in memory:
                      limit = DEPTH_FACTOR x eps32 x magnitude x depth (layers the output passed)
    fp16, measured    the reference is float32 arithmetic on the same fp16-rounded weights;
    (the default)     noise16 = max |PyTorch fp16 - that reference| over every parity case (the same
                      part run again in PyTorch fp16, ``export/half_run.py``)
                      limit = FP16_NOISE_FACTOR x noise16, at least one fp16 ulp of the output's
                      magnitude (the embedding gather is exact in fp16 too)
    fp16, absolute    where that run was not made: FP16_TOLERANCE (5e-2; attention
                      FP16_ATTENTION_TOLERANCE)
    --atol A          every limit becomes max(limit, A): it can only widen, never shrink one

Why NOISE_FACTOR: ONNX Runtime's own float32 error is about PyTorch's (they sum in different
orders), so a correct graph differs from PyTorch by up to about twice the measured noise (measured:
0.2-2.4x over the fixtures, the real-weights model and a 32-layer one; docs/export-parity.md);
8x leaves room for a CPU whose kernels round differently.  A real defect (a wrong mask, alpha
ignored or doubled, a swapped or corrupted weight) moves the outputs by orders of magnitude more.

Why FP16_NOISE_FACTOR: an fp16 graph rounds where PyTorch fp16 does, or less often (ONNX Runtime on an
x86 CPU computes fp16 MatMuls in float32 and fuses across some of the roundings), so a correct graph
sits within about PyTorch fp16's own distance from the fp32 reference (measured 0.27-0.78x on
``tiny-fp16`` and on LLaVA-1.5-7B's shapes: docs/export-parity.md); 4x leaves room for graph cuts that
round the residual stream (``export/range_parity.py``) and for kernels that round more often.
"""
from __future__ import annotations

from dataclasses import dataclass, field

EPS32 = 2.0 ** -23          # float32 machine epsilon, 1.19e-7
EPS16 = 2.0 ** -10          # fp16 machine epsilon, 9.8e-4
NOISE_FACTOR = 8.0
FP16_NOISE_FACTOR = 4.0
FLOOR_ULPS = 16.0
DEPTH_FACTOR = 16.0
FP16_TOLERANCE = 5e-2       # fp16 graphs: logits of a random model reach |10|; fp16 carries ~3 decimal digits
FP16_ATTENTION_TOLERANCE = 1e-2     # probabilities in [0, 1]; fp16 graphs compute the scores in fp16

MEASURED = "fp32: 8 x PyTorch fp32's distance from float64"
BY_DEPTH = "fp32: eps32 x magnitude x depth x 16 (no float64 run)"
FP16 = "fp16: absolute"
FP16_MEASURED = "fp16: 4 x PyTorch fp16's distance from the fp32 reference"


@dataclass(frozen=True)
class Tolerances:
    """The limit per manifest key, how each was set, and the noise measured (if it was): fp32, PyTorch
    fp32's distance from float64; fp16, PyTorch fp16's distance from the fp32 reference."""
    limits: dict[str, float]
    rules: dict[str, str]
    noise: dict[str, float] = field(default_factory=dict)
    by_depth: dict[str, float] = field(default_factory=dict)    # fp32: what the fallback rule would allow

    def explain(self, key: str) -> str:
        """'tolerance 4.1e-06 (fp32: 8 x PyTorch fp32's distance from float64, 5.1e-07)'."""
        rule = self.rules[key]
        noise = f", {self.noise[key]:.2g}" if key in self.noise and rule in (MEASURED, FP16_MEASURED) else ""
        return f"tolerance {self.limits[key]:.3g} ({rule}{noise})"


def tolerances(keys: list[str], dtype: str, noise: dict[str, float], magnitude: dict[str, float],
               depth: dict[str, int], atol: float | None = None) -> Tolerances:
    """The limits for ``keys``: measured where ``noise`` has the key, else by depth (fp16: absolute)."""
    limits, rules = {}, {}
    by_depth = {} if dtype == "fp16" else \
        {key: DEPTH_FACTOR * EPS32 * magnitude.get(key, 1.0) * max(1, depth.get(key, 1)) for key in keys}
    for key in keys:
        if dtype == "fp16" and key in noise:
            limits[key] = max(FP16_NOISE_FACTOR * noise[key], EPS16 * magnitude.get(key, 1.0))
            rules[key] = FP16_MEASURED
        elif dtype == "fp16":
            limits[key], rules[key] = (FP16_ATTENTION_TOLERANCE if key.endswith(".attention") else FP16_TOLERANCE), FP16
        elif key in noise:
            limits[key] = max(NOISE_FACTOR * noise[key], FLOOR_ULPS * EPS32 * magnitude.get(key, 1.0))
            rules[key] = MEASURED
        else:
            limits[key], rules[key] = by_depth[key], BY_DEPTH
    if atol is not None:
        for key in keys:
            if atol > limits[key]:
                limits[key], rules[key] = atol, f"--atol {atol:g}"
    return Tolerances(limits, rules, {k: v for k, v in noise.items() if k in keys}, by_depth)
