"""What every dataset reader shares: reading an annotation file, finding a record's image on disk
(the lookup order is in ``readers.datasets``'s docstring), and turning bad records into problems."""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional

from . import prompts as P
from .errors import DatasetNotFoundError, UnknownFormatError
from .items import Item, LoadReport
from .jsonscan import ScanError, ScanRecord

_IMAGE_DIRS: dict[str, tuple[str, ...]] = {
    P.CONTROLLED_A: ("controlled_images",),
    P.CONTROLLED_B: ("controlled_clevr",),
    P.CONTROLLED_SYNTHETIC: ("images",),
    P.COCO_ONE: ("val2017",),
    P.COCO_TWO: ("val2017",),
    P.VG_ONE: ("vg_images",),
    P.VG_TWO: ("vg_images",),
    P.VSR: ("train2017", "val2017", "images"),
}


def read_text(path: Path) -> str:
    if not path.exists():
        raise DatasetNotFoundError(f"dataset file not found: {path}")
    if path.is_dir():
        raise UnknownFormatError(f"expected a file, got a folder: {path}")
    return path.read_bytes().decode("utf-8", errors="replace")


def type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def resolve_image(raw: str, subset: str, image_root: Path, ann_dir: Path) -> tuple[Optional[Path], list[Path]]:
    """Find an image on disk; returns ``(path or None, candidates tried)``."""
    rel = PurePosixPath(raw.replace("\\", "/"))
    if rel.is_absolute():
        p = Path(str(rel))
        return (p if p.is_file() else None), [p]
    parts = rel.parts
    stripped = PurePosixPath(*parts[1:]) if len(parts) > 1 and parts[0] == "data" else None
    cands: list[Path] = []
    for root in dict.fromkeys([image_root, ann_dir]):
        cands.append(root / str(rel))
        if stripped is not None:
            cands.append(root / str(stripped))
        for sub in _IMAGE_DIRS.get(subset, ()):
            cands.append(root / sub / rel.name)
        cands.append(root / rel.name)
    cands = list(dict.fromkeys(cands))
    for c in cands:
        if c.is_file():
            return c, cands
    return None, cands


def missing_message(kind: str, raw: str, tried: list[Path]) -> str:
    return f"{kind} not found: {raw!r} (tried {', '.join(str(t) for t in tried[:4])}{' ...' if len(tried) > 4 else ''})"


def scan_records(report: LoadReport, path: Path, scanner: Callable[[str], Iterable]) -> Iterable[ScanRecord]:
    for rec in scanner(read_text(path)):
        if isinstance(rec, ScanError):
            report.add_problem(path, rec.line, rec.message)
        else:
            yield rec


def add_item(report: LoadReport, path: Path, line: int, make: Callable[[], Item]) -> None:
    try:
        report.items.append(make())
    except ValueError as e:  # Item validation
        report.add_problem(path, line, str(e))
