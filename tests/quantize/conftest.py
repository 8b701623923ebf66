"""Quantized copies of the tiny bundles (built once per session), and a few fixed prompts."""
from __future__ import annotations

import pytest

PRECISIONS = ("fp16", "int8", "int4", "int8-dynamic")


def _quantized_once(source, tmp_path_factory, prefix: str):
    """get(size, to, **options) -> the folder of ``source(size)`` quantized with those settings, built once."""
    from quantize import quantize_bundle

    made = {}

    def get(size: str, to: str, **options):
        key = (size, to, tuple(sorted(options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"{prefix}-{size}-{to}") / "bundle"
            quantize_bundle(source(size), out, to=to, log=lambda m: None, **options)
            made[key] = out
        return made[key]
    return get


@pytest.fixture(scope="session")
def quantized_dir(bundle_dir, tmp_path_factory):
    """quantized_dir(size, to, **options) -> the folder of bundle_dir(size) quantized with those settings."""
    return _quantized_once(bundle_dir, tmp_path_factory, "q")


@pytest.fixture(scope="session")
def quantized_qwen_dir(qwen_bundle_dir, tmp_path_factory):
    """quantized_qwen_dir(size, to, **options) -> the Qwen bundle of ``size`` quantized with those settings."""
    return _quantized_once(qwen_bundle_dir, tmp_path_factory, "qwen")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """Eight items of the synthetic spatial benchmark (seed 0)."""
    from quantize.report import synthetic_items

    return synthetic_items(tmp_path_factory.mktemp("synthetic"), 8, seed=0)


@pytest.fixture(scope="session")
def prompts(synthetic):
    """Four fixed (image, question) prompts."""
    return [(item.image_path, item.question) for item in synthetic[:4]]
