"""How a bundle is quantized: one frozen, checked settings object for ``quantize_bundle`` (the CLI builds it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import weights as W
from .errors import OptionError


@dataclass(frozen=True)
class Settings:
    to: str                         # fp16 | int8 | int4 | int8-dynamic
    block_size: int | None = None   # int8 / int4: weights per scale along K (None: 32)
    symmetric: bool = False         # int8 / int4 / int8-dynamic: no zero points
    accuracy_level: int | None = None   # int8 / int4: MatMulNBits compute type (None: W.DEFAULT_ACCURACY_LEVEL)
    vision: bool = False            # also the vision graph (tower + projector)
    embed: bool = False             # also the embedding table (fp16 only)
    lm_head: bool = False           # also the decoder's LM head
    report: bool = False            # measure the accuracy cost against the source (quantize/report.py)
    report_items: int = 40          # synthetic benchmark items for the report: 10 per relation
    report_seed: int = 0

    @classmethod
    def build(cls, settings: "Settings | None" = None, **options) -> "Settings":
        """``settings`` (None: the defaults, ``to`` then required) with ``options`` replaced, checked once;
        an unknown option is an OptionError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(f"unknown quantize option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if settings is None:
            if "to" not in options:
                raise OptionError(f"the precision is required: to= one of {', '.join(W.PRECISIONS)}")
            return cls(**options).check()
        return dataclasses.replace(settings, **options).check()

    def check(self) -> "Settings":
        if self.to not in W.PRECISIONS:
            raise OptionError(f"--to must be one of {', '.join(W.PRECISIONS)}, got {self.to!r}")
        n = self.report_items
        if isinstance(n, bool) or not isinstance(n, int) or n < 4 or not isinstance(self.report_seed, int):
            raise OptionError(f"--report-items must be an int >= 4 (the benchmark has 4 relations) and --report-seed "
                              f"an int, got {n!r} and {self.report_seed!r}")
        if self.to not in W.PRECISIONS:
            raise OptionError(f"--to must be one of {', '.join(W.PRECISIONS)}, got {self.to!r}")
        nbits = self.to in W.NBITS
        if not nbits and (self.block_size is not None or self.accuracy_level is not None):
            raise OptionError(f"--block-size and --accuracy-level are MatMulNBits settings (--to int8 or int4), "
                              f"not {self.to}'s")
        if self.to == "fp16" and self.symmetric:
            raise OptionError("--symmetric is an integer setting (--to int8, int4 or int8-dynamic), not fp16's")
        if not nbits:
            return self
        if self.block_size is None or self.accuracy_level is None:
            return dataclasses.replace(self, block_size=32 if self.block_size is None else self.block_size,
                                       accuracy_level=W.DEFAULT_ACCURACY_LEVEL[self.to] if self.accuracy_level is None
                                       else self.accuracy_level).check()
        if self.block_size not in W.BLOCK_SIZES:
            raise OptionError(f"--block-size must be one of {', '.join(map(str, W.BLOCK_SIZES))}, got {self.block_size!r}")
        if self.accuracy_level not in W.ACCURACY_LEVELS:
            raise OptionError(f"--accuracy-level must be one of {', '.join(map(str, W.ACCURACY_LEVELS))} "
                              f"(MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8), got {self.accuracy_level!r}")
        if self.embed and self.to != "fp16":
            raise OptionError("--embed works with --to fp16 only: MatMulNBitsQuantizer quantizes a Gather only to "
                              "4 bits and only at opset 21 (bundles are opset <= 20 for TensorRT 10.3)")
        return self

    @property
    def bits(self) -> int:
        return {"fp16": 16, "int8": 8, "int4": 4, "int8-dynamic": 8}[self.to]

    def converts(self, graph: str) -> bool:
        return graph == "decoder" or (graph == "vision" and self.vision) or (graph == "embed" and self.embed)
