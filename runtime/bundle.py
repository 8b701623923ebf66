"""Open a bundle folder: read its manifest and check that every file is there, inside it and intact.

    manifest.sha256 --digest of--> manifest.json --sha256 table--> graphs, tokenizer, weights
         (1) the manifest is the one written   (3) every file is the one exported
    (2) every field typed and in range; every file named stays inside the folder

A bundle is trusted only when all three hold.  ``verify_checksums=False`` skips (1) and (3), never (2).
The digests catch accidental edits and corruption; whoever can write the folder can rewrite the
manifest and its digest together, so they are no defence against a deliberate change.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, SCHEMA_VERSION, Manifest, manifest_digest_line
from graphs.manifest_fields import ManifestFieldError, fused_record_files

from .errors import BundleError


def open_bundle(folder: str | Path, verify_checksums: bool = True) -> Manifest:
    """Returns the manifest; raises BundleError for a missing, corrupted, edited or unknown bundle."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist (export one with: just export <model> --out {folder})")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}: not a bundle, or an export that did not finish")
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path} has manifest schema version {version!r}; this runtime reads version "
                          f"{SCHEMA_VERSION} (re-export the bundle with this version of the exporter)")
    if verify_checksums:
        _check_manifest_digest(folder, raw)
    try:
        manifest = Manifest.from_dict(data)
    except (ManifestFieldError, KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path} is malformed: {e}") from None
    _check_files(folder, manifest, verify_checksums)
    return manifest


def _check_manifest_digest(folder: Path, raw: bytes) -> None:
    digest_path = folder / MANIFEST_DIGEST_FILE
    if not digest_path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_DIGEST_FILE} (the digest of its manifest): re-export the "
                          f"bundle, or load it with verify_checksums=False to skip every checksum")
    want = digest_path.read_text(errors="replace").split()[:1]
    got = manifest_digest_line(raw).split()[0]
    if want != [got]:
        shown = want[0][:12] if want else "nothing"
        raise BundleError(f"{folder / MANIFEST_FILE} does not match {MANIFEST_DIGEST_FILE} (sha256 {got[:12]}..., "
                          f"expected {shown}...): the manifest was edited or corrupted; re-export the bundle")


def _check_files(folder: Path, manifest: Manifest, verify_checksums: bool) -> None:
    needed = [*manifest.graphs.values(), manifest.tokenizer_file,
              *(f for record in (manifest.fused_decoders or {}).values() for f in fused_record_files(record))]
    root = folder.resolve()
    for name in [*needed, *manifest.sha256]:
        if not (folder / name).resolve().is_relative_to(root):
            raise BundleError(f"{folder / name} leads outside the bundle folder {folder}: refused")
    missing = [name for name in needed if not (folder / name).is_file()]
    missing += [name for name in manifest.sha256 if name not in missing and not (folder / name).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} is missing {', '.join(sorted(missing))}")
    if not verify_checksums:
        return
    unlisted = [name for name in needed if name not in manifest.sha256]
    if unlisted:
        raise BundleError(f"{folder / MANIFEST_FILE} lists no sha256 for {', '.join(unlisted)}: the checksum table "
                          f"is incomplete; re-export, or load with verify_checksums=False to skip every checksum")
    for name, want in manifest.sha256.items():
        got = sha256_file(folder / name)
        if got != want:
            raise BundleError(f"{folder / name} does not match its checksum in the manifest "
                              f"(sha256 {got[:12]}..., expected {want[:12]}...): the file is corrupted or was edited")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
