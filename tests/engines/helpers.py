"""Hand-written engine builds for the tests that need no TensorRT: an engines.json and empty files."""
from __future__ import annotations

import shutil
from pathlib import Path

from runtime.engine_layout import GRAPHS, RECORD_SCHEMA, EngineTarget, context_model_file, engine_file, engines_root, write_record
from graphs.manifest import MANIFEST_FILE
from runtime.bundle import sha256_file

ORIN = EngineTarget("10.3.0", "8.7", "Orin")
DESKTOP = EngineTarget("10.7.0", "8.9", "NVIDIA GeForce RTX 4090")


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def fake_build(bundle: Path, target: EngineTarget, **overrides) -> Path:
    """engines/<target folder>/ with an engines.json as the builder writes it, and empty engine files.
    Not an engine: only for the selection and refusal logic, which never opens them."""
    folder = engines_root(bundle) / target.folder
    folder.mkdir(parents=True)
    record = {"schema_version": RECORD_SCHEMA, "tensorrt": target.tensorrt,
              "compute_capability": target.compute_capability, "gpu": target.gpu, "precision": "fp32",
              "strongly_typed": True, "max_prompt": 40, "max_context": 48,
              "bundle_manifest_sha256": sha256_file(bundle / MANIFEST_FILE), "timing_cache": "timing.cache",
              "engines": {g: {"engine": engine_file(g), "context_model": context_model_file(g), "bytes": 0,
                              "build_seconds": 0.0, "profiles": []} for g in GRAPHS}}
    record.update(overrides)
    write_record(folder, record)
    for g in GRAPHS:
        (folder / engine_file(g)).write_bytes(b"")
        (folder / context_model_file(g)).write_bytes(b"")
    return folder
