"""Open a bundle folder: read its manifest and check that every file is there and intact."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from graphs.manifest import MANIFEST_FILE, SCHEMA_VERSION, Manifest

from .errors import BundleError


def open_bundle(folder: str | Path, verify_checksums: bool = True) -> Manifest:
    """Returns the manifest; raises BundleError for a missing, corrupted or unknown bundle."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist (export one with: just export <model> --out {folder})")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}: not a bundle, or an export that did not finish")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path} has manifest schema version {version!r}; this runtime reads version "
                          f"{SCHEMA_VERSION} (re-export the bundle with this version of the exporter)")
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path} is malformed: {type(e).__name__}: {e}") from None
    needed = [*manifest.graphs.values(), manifest.tokenizer_file]
    missing = [name for name in needed if not (folder / name).is_file()]
    missing += [name for name in manifest.sha256 if name not in missing and not (folder / name).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} is missing {', '.join(sorted(missing))}")
    if verify_checksums:
        for name, want in manifest.sha256.items():
            got = sha256_file(folder / name)
            if got != want:
                raise BundleError(f"{folder / name} does not match its checksum in the manifest "
                                  f"(sha256 {got[:12]}..., expected {want[:12]}...): the file is corrupted or was edited")
    return manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
