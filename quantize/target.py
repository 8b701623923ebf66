"""Where a quantized bundle goes: beside its source by default, never inside it, never over it."""
from __future__ import annotations

from pathlib import Path

from runtime.bundle_write import check_target as check_free
from runtime.errors import BundleExistsError

REPORT_FILE = "quantization.md"       # the accuracy report, written into the quantized bundle with --report


def default_out(source: Path, to: str) -> Path:
    return source.parent / f"{source.name}-{to}"


def check_target(out: Path, source: Path, force: bool) -> None:
    if out == source or source in out.parents or out in source.parents:
        raise BundleExistsError(f"--out {out} is, holds or lies inside the source bundle {source}; "
                                f"the source is never modified: pick another folder")
    check_free(out, force)
