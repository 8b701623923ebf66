"""Tests that edit a bundle's manifest on purpose write its digest file too, as an exporter would.

By hand, not through ``runtime.bundle_write`` (which refuses to sign what does not check): these plant
what a careless or hostile editor could leave, resealed, for the readers to refuse."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, manifest_digest_line


def rewrite_manifest(folder: Path, data: dict) -> None:
    text = json.dumps(data).encode()
    (Path(folder) / MANIFEST_FILE).write_bytes(text)
    (Path(folder) / MANIFEST_DIGEST_FILE).write_text(manifest_digest_line(text))


def plant_file(folder: Path, name: str, content: bytes) -> None:
    """Write ``name`` into the bundle and list its digest in the manifest, resealed."""
    (Path(folder) / name).write_bytes(content)
    data = json.loads((Path(folder) / MANIFEST_FILE).read_text())
    data["sha256"][name] = hashlib.sha256(content).hexdigest()
    rewrite_manifest(folder, data)
