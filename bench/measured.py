"""What one ``just bench`` run measured, as one frozen object: what ``build_result`` turns into the JSON result."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


class MeasuredError(ValueError):
    """A run's measurements are incomplete or inconsistent (a harness bug, caught before any result is written)."""


@dataclass(frozen=True)
class Measured:
    args: Any                    # the parsed command line (size, tokens, repeat, threshold, provider, out ...)
    info: dict                   # machine.describe(): CPUs, memory, OS
    art: Any                     # artifacts.Artifacts: the bundle and checkpoint folders, what was built now
    manifest: Any                # the bundle's graphs.manifest.Manifest
    bandwidth: dict              # memory bandwidth: single / all threads, read-only too
    weights: dict                # bytes of weights per graph and in total
    peak: dict | None            # peak resident memory of one answer (None: not measured)
    samples: dict                # side -> method -> new tokens -> [one dict per repeat]
    warm: dict                   # method -> repeats with the image prefix cached (ours)
    warm_tokens: int             # the new-token count the warm runs used
    ours_load: float             # seconds to load our runtime
    ref_load: float | None       # seconds to load the PyTorch reference (None: not run)
    ref: Any                     # the reference runner, or None
    started: dt.datetime         # when the run started (UTC)
    vlm: Any                     # our loaded runtime.VLM
    noise: dict                  # load averages and other processes' CPU time while timing
    extra: tuple = ()            # variants.Variant runs beside ours (quantized, fused ...)

    def check(self) -> "Measured":
        """Every side sampled for every new-token count asked for, plain and AdaptVis on ours."""
        sides = ["ours"] + ([] if self.ref is None else ["reference"]) + [v.side for v in self.extra]
        missing = [side for side in sides if side not in self.samples]
        missing += [f"ours {m}" for m in ("plain", "adaptvis") if m not in self.samples.get("ours", {})]
        missing += [f"{side} {m} {n} tokens" for side in sides if side in self.samples
                    for m, by_n in self.samples[side].items() for n in self.args.tokens if not by_n.get(n)]
        if missing:
            raise MeasuredError(f"the run has no samples for {', '.join(missing)}")
        if self.ours_load < 0 or (self.ref_load is not None and self.ref_load < 0):
            raise MeasuredError(f"load times must be >= 0, got {self.ours_load} and {self.ref_load}")
        return self
