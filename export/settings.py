"""How an export is made: one frozen, checked settings object for ``export_llava``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from graphs.manifest import ATTENTION_FORMS, DEFAULT_ATTENTION_FORM

from .errors import ExportError

DEFAULT_OPSET = 18   # TensorRT 10.3 (JetPack 6) reads opset <= 20
MAX_OPSET = 20
DTYPES = ("fp32", "fp16")
CASE_SETS = ("all", "per-layer-head")     # export/parity.py's case sets


@dataclass(frozen=True)
class ExportSettings:
    """``dtype``: "fp32" or "fp16"; None (default): the checkpoint's own (``export/memory_need.py``).
    ``atol``: no parity tolerance below it (by default they follow the model's own rounding: fp32,
    measured against float64; fp16, PyTorch fp16 against the fp32 reference; ``export/tolerance.py``).
    ``attention_form``: where the decoder applies the image-attention scale, "scaled-logits" or
    "scaled-keys" (the same attention; see ``export/steered_attention.py``), recorded in the manifest.
    ``bound_weights`` (the default) traces each graph without its weights and writes them from
    the loaded model one tensor at a time (``export/bound_weights.py``): the exporter never holds a
    second copy of them.  False: the TorchScript exporter folds and writes the weights itself.
    ``memory_log``: a JSON file to write each phase's peak resident memory into (``export/memory_log.py``).
    ``fused`` (the default): also write the fused decoder pair for ONNX Runtime's CPU and CUDA providers
    (``fused/``: the plain and the steered graph), checked against ``decoder.onnx``; a decoder the builder
    does not take (``UnsupportedDecoderError``) gets none, and the log says why.
    ``parity_layers``: the parity check runs the decoder in ONNX Runtime layer range by layer range
    (``export/range_parity.py``); None (default): an fp32 decoder whole, in one session, and an fp16
    one in ranges whose fp32 weights stay within ``PARITY_RANGE_FRACTION`` of the model's weight bytes;
    N: N layers a range; 0: the whole decoder in one session (on x86 an fp16 decoder then costs twice
    its size: ORT casts its weights to fp32).
    ``parity_cases``: "all" (alpha 0.5, 1, 2 and a per-layer-head scale) or "per-layer-head"; None
    (default): all up to ``parity.ALL_CASES_MAX_PARAMETERS`` parameters, the per-layer-head one above.
    ``check_memory``: state the expected peak memory first and refuse at once where it is not available.
    """

    dtype: str | None = None
    opset: int = DEFAULT_OPSET
    revision: str | None = None            # a hub revision; None for a local folder or the default branch
    pad_to_square: bool = False            # LLaVA's "pad" aspect mode, recorded in the manifest's preprocessing
    atol: float | None = None
    bound_weights: bool = True
    attention_form: str = DEFAULT_ATTENTION_FORM
    memory_log: Path | None = None
    parity_layers: int | None = None
    fused: bool = True                     # also write the fused decoder pair (fused/), checked against decoder.onnx
    parity_cases: str | None = None
    check_memory: bool = True

    def with_options(self, **options) -> "ExportSettings":
        """A copy with ``options`` replaced, checked; an unknown option is an ExportError naming the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ExportError(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **options).check()

    def check(self) -> "ExportSettings":
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ExportError(f"dtype must be fp32 or fp16 (or None: the checkpoint's own), got {self.dtype!r}")
        if self.parity_cases is not None and self.parity_cases not in CASE_SETS:
            raise ExportError(f"parity_cases must be one of {', '.join(CASE_SETS)}, got {self.parity_cases!r}")
        if self.attention_form not in ATTENTION_FORMS:
            raise ExportError(f"attention_form must be one of {', '.join(ATTENTION_FORMS)}, got {self.attention_form!r}")
        if self.parity_layers is not None and self.parity_layers < 0:
            raise ExportError(f"parity_layers must be >= 0 (0: the whole decoder at once), got {self.parity_layers}")
        if self.atol is not None and not 0 < self.atol < 1:
            raise ExportError(f"atol must be in (0, 1), got {self.atol}")
        if not 14 <= self.opset <= MAX_OPSET:
            raise ExportError(f"opset must be within 14..{MAX_OPSET} (TensorRT 10.3 on JetPack 6 reads <= 20), "
                              f"got {self.opset}")
        return self
