"""Bundles with fused decoders: a copy of each tiny bundle, with decoder_fused_<dtype>.onnx built into it."""
from __future__ import annotations

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
            for dtype in dtypes:
                fuse_bundle(out, dtype, checkpoint=checkpoint_dir(size), log=lambda m: None)
            made[key] = out
        return made[key]
    return get
