"""Shared helpers for the dataset readers' tests."""
from __future__ import annotations

import json
from pathlib import Path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG fake image bytes")
    return path


def problems_by_line(report) -> dict[int, str]:
    return {p.line: p.message for p in report.problems}


def dumps_lines(records) -> str:
    """A JSON list with one record per line (record k on line k + 2)."""
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"
