"""The one record type every benchmark reader produces, and the report around it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    ``question`` is the reference question text for the subset *without* the chat
    template (no ``<image>``, ``USER:`` or ``ASSISTANT:``).  ``options`` are the answer
    words listed in that question, lower case; ``gold`` is one of them.

    ``group`` is set for the Controlled sets only: the ``(obj, ref)`` pair key taken
    from the image file name (``"<obj>|<ref>"``), shared by the four relation variants
    of one object pair; pair/set accuracy are computed over it.  ``relation`` is the
    relation as written in the source (``left_of``, ``in-front_of``, ``on`` ...).
    ``boxes`` holds bounding boxes where the source has them (the synthetic set:
    ``{"A": [x0, y0, x1, y1], "B": [...]}``, A being the subject).  ``source`` is
    ``"file:line"`` of the record.  ``blank_image_path`` is the mean-colour copy of the
    image where the source provides one (the synthetic set), for the blind test.

    ``kind`` and ``familiar`` are set where the source has them (the synthetic set):
    ``kind`` is ``"shape"`` (coloured shapes, names without a language prior) or
    ``"thing"`` (everyday objects such as a cup and a table); ``familiar`` is, for
    things, whether the item's relation is the one a language prior expects (a cup
    *on* a table: ``True``; a cup under a table, or a table on a cup: ``False``), and
    ``None`` for shapes.  Evaluation breaks accuracy down by both.
    """

    id: str
    image_path: Path
    question: str
    options: tuple[str, ...]
    gold: str
    subset: str
    group: Optional[str]
    relation: Optional[str]
    boxes: Optional[dict]
    source: str
    blank_image_path: Optional[Path] = None
    kind: Optional[str] = None
    familiar: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.gold not in self.options:
            raise ValueError(f"gold {self.gold!r} is not one of the options {self.options!r}")


@dataclass(frozen=True)
class Problem:
    """A record that was skipped or could not be used, and why."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class LoadReport:
    """What a reader got: the usable items, and one :class:`Problem` per skipped record."""

    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    subset: Optional[str] = None
    path: Optional[Path] = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add_problem(self, file: str | Path, line: int, message: str) -> None:
        self.problems.append(Problem(str(file), int(line), message))

    def summary(self, limit: int = 20) -> str:
        head = f"{self.subset or 'dataset'}: {len(self.items)} items, {len(self.problems)} problems"
        lines = [head] + [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)
