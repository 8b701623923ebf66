"""Shared helpers for the calibration tests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG fake image bytes")
    return path


def problems_by_line(report) -> dict[int, str]:
    return {p.line: p.message for p in report.problems}


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """A 48-item synthetic Controlled set (12 object pairs x 4 relations)."""
    from calibration.synthetic import generate

    return generate(tmp_path_factory.mktemp("syn"), n=48, seed=3, size=96)


def dumps_lines(records) -> str:
    """A JSON list with one record per line (record k on line k + 2)."""
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"
