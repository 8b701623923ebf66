"""Shared fixtures: tiny LLaVA checkpoints built locally, and their exported bundles.

Two checkpoints that differ where exports tend to break: grouped-query vs
plain multi-head attention, 30 px / patch 6 vs 32 px / patch 8 images, and
feature layer -2 with CLS dropped vs layer -1 with CLS kept.
"""
from __future__ import annotations

import numpy as np
import pytest

CHECKPOINTS = ("tiny", "tiny-mha")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    from fixtures import build_checkpoint

    made = {}

    def get(size: str):
        if size not in made:
            made[size] = build_checkpoint(tmp_path_factory.mktemp(f"ckpt-{size}"), size=size, seed=0)
        return made[size]
    return get


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, checkpoint_dir):
    from export import export_llava

    made = {}

    def get(size: str):
        if size not in made:
            out = tmp_path_factory.mktemp(f"bundle-{size}") / "bundle"
            export_llava(str(checkpoint_dir(size)), out, log=lambda m: None)
            made[size] = out
        return made[size]
    return get


@pytest.fixture(scope="session")
def qwen_bundle_dir(tmp_path_factory, checkpoint_dir):
    """A Qwen bundle exported once per session from a tiny checkpoint (``tiny-qwen2.5-vl`` / ``tiny-qwen3-vl``)."""
    from export.route import export_model

    made = {}

    def get(size: str):
        if size not in made:
            out = tmp_path_factory.mktemp(f"qwen-bundle-{size}") / "bundle"
            export_model(str(checkpoint_dir(size)), out, log=lambda m: None)
            made[size] = out
        return made[size]
    return get


@pytest.fixture(params=CHECKPOINTS)
def size(request):
    return request.param


def random_image(seed: int, height: int = 40, width: int = 50) -> np.ndarray:
    """An HxWx3 uint8 image of smooth colour blobs (natural-ish, not white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(3):
            cx, cy, r = rng.random(3)
            img[..., c] += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.05 + 0.2 * r))
    img = img / img.max() * 255
    return img.astype(np.uint8)
