"""Bundles with fused decoder pairs: a copy of each tiny bundle (the export writes the fp32 pair), other dtypes added."""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="session")
def fused_bundle(tmp_path_factory, bundle_dir, checkpoint_dir):
    from fused import fuse_bundle

    made = {}

    def get(size: str, dtypes=("fp32",)):
        key = (size, tuple(dtypes))
        if key not in made:
            out = tmp_path_factory.mktemp(f"fused-{size}") / "bundle"
            shutil.copytree(bundle_dir(size), out)
            have = json.loads((out / "manifest.json").read_text())["fused_decoders"] or {}
            for dtype in (d for d in dtypes if d not in have):
                fuse_bundle(out, dtype, checkpoint=checkpoint_dir(size), log=lambda m: None)
            made[key] = out
        return made[key]
    return get


@pytest.fixture(params=("tiny", "tiny-mha16"))
def size(request):
    """Grouped-query heads (tiny: 4 / 2) and multi-head (4 / 4); tiny-mha's head size 12 gets no fused pair."""
    return request.param
