"""The items a calibration or evaluation runs on: load a dataset, report its problems, limit it.

Problems (a record that could not be used, a missing image ...) are printed as
``file:line: message`` and the run goes on with the items that loaded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .datasets import find_datasets, load_dataset
from .items import Item, Problem


@dataclass
class WorkSet:
    """One subset's items, where they came from, and what could not be used."""

    subset: str
    items: list[Item]
    source: Path
    problems: list[Problem] = field(default_factory=list)
    n_loaded: int = 0            # before --limit

    @property
    def groups(self) -> Optional[dict[str, str]]:
        """item id -> group key when every item has a group (the Controlled sets), else None."""
        if self.items and all(it.group is not None for it in self.items):
            return {it.id: it.group for it in self.items}
        return None


def limit_items(items: Sequence[Item], limit: Optional[int]) -> list[Item]:
    """At most ``limit`` items.  Without groups: the first ``limit``.  With groups (every
    item has one): whole groups, in order of first appearance, as many as fit (at least
    one), so pair and set accuracy stay meaningful."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"--limit must be positive, got {limit}")
    if not all(it.group is not None for it in items):
        return items[:limit]
    members: dict[str, list[Item]] = {}
    for it in items:
        members.setdefault(it.group, []).append(it)
    chosen: set[str] = set()
    count = 0
    for g, its in members.items():
        if chosen and count + len(its) > limit:
            break
        chosen.add(g)
        count += len(its)
    return [it for it in items if it.group in chosen]


def load_worksets(datasets: Sequence[str | Path], subset: Optional[str] = None, image_root=None,
                  limit: Optional[int] = None, err: TextIO = sys.stderr, max_problems: int = 50) -> list[WorkSet]:
    """Load each dataset path (a folder holding several known annotation files gives one
    work set per subset unless ``subset`` picks one), print its problems, apply ``limit``
    to each.  Raises the readers' ``DatasetError`` when a path cannot be read at all."""
    out: list[WorkSet] = []
    for ds in datasets:
        p = Path(ds)
        targets: list[tuple[Path, Optional[str]]]
        if p.is_dir() and subset is None:
            found = find_datasets(p)
            targets = [(f, s) for s, f in sorted(found.items())] if len(found) > 1 else [(p, None)]
        else:
            targets = [(p, subset)]
        for path, sub in targets:
            report = load_dataset(path, image_root=image_root, subset=sub)
            print_problems(report.problems, report.subset or str(path), err, max_problems)
            ws = WorkSet(subset=report.subset or "dataset", items=limit_items(report.items, limit),
                         source=report.path or path, problems=list(report.problems), n_loaded=len(report.items))
            out.append(ws)
    return out


def print_problems(problems: Sequence[Problem], what: str, err: TextIO = sys.stderr, limit: int = 50) -> None:
    if not problems:
        return
    print(f"{what}: {len(problems)} record(s) skipped or incomplete:", file=err)
    for p in problems[:limit]:
        print(f"  {p}", file=err)
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more", file=err)
