"""Tests that edit a bundle's manifest on purpose write its digest file too, as an exporter would."""
from __future__ import annotations

import json
from pathlib import Path

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, manifest_digest_line


def rewrite_manifest(folder: Path, data: dict) -> None:
    text = json.dumps(data).encode()
    (Path(folder) / MANIFEST_FILE).write_bytes(text)
    (Path(folder) / MANIFEST_DIGEST_FILE).write_text(manifest_digest_line(text))
