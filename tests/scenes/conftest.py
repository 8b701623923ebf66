"""Shared fixtures for the scene tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from scenes.synthetic import generate


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """A 48-item synthetic Controlled set (12 object pairs x 4 relations)."""
    return generate(tmp_path_factory.mktemp("syn"), n=48, seed=3, size=96)
