"""A Qwen bundle as a quantization source: its manifest, every digest checked, fp32 and not quantized yet.

    manifest.sha256 --digest of--> manifest.json (QwenManifest, every field checked)
                                        |--sha256 table--> every file it lists, and every file it names
    refused: a damaged or incomplete bundle (SourceBundleError), a quantized one (AlreadyQuantizedError),
             one of another dtype than fp32 (SourceBundleError)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE
from graphs.manifest_fields import fused_record_files
from graphs.qwen_manifest import QWEN_FAMILIES, QwenManifest
from runtime.bundle import sha256_file

from .errors import AlreadyQuantizedError, SourceBundleError


@dataclass(frozen=True)
class QwenSource:
    folder: Path
    manifest: QwenManifest
    manifest_sha256: str            # the digest of manifest.json's bytes (the quantized bundle names it)

    def graph_files(self) -> dict[str, str]:
        """{graph: file}: vision, embed, decoder."""
        return {name: record["file"] for name, record in self.manifest.graphs.items()}


def is_qwen_bundle(folder: Path) -> bool:
    """Whether ``folder``'s manifest.json names a Qwen family (read for that field only; checked by ``open_qwen``)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("family") in QWEN_FAMILIES


def open_qwen(folder: Path) -> QwenSource:
    """The Qwen bundle at ``folder``, every checksum verified; refuses quantized and non-fp32 bundles."""
    folder = Path(folder)
    try:
        raw = (folder / MANIFEST_FILE).read_bytes()
        manifest = QwenManifest.from_dict(json.loads(raw), MANIFEST_FILE)
        digest = (folder / MANIFEST_DIGEST_FILE).read_text(errors="replace").split()[:1]
    except (OSError, ValueError) as e:           # QwenManifestError, bad JSON, a missing file
        raise SourceBundleError(f"cannot quantize {folder}: {e}") from None
    got = hashlib.sha256(raw).hexdigest()
    if digest != [got]:
        raise SourceBundleError(f"cannot quantize {folder}: {MANIFEST_FILE} does not match {MANIFEST_DIGEST_FILE} "
                                f"(the manifest was edited or corrupted); re-export the bundle")
    named = [*(g["file"] for g in manifest.graphs.values()), manifest.files["tokenizer"],
             *(f for r in (manifest.fused_decoders or {}).values() for f in fused_record_files(r))]
    unlisted = sorted(set(named) - set(manifest.sha256))
    if unlisted:
        raise SourceBundleError(f"cannot quantize {folder}: the manifest lists no sha256 for {', '.join(unlisted)}")
    for name, want in manifest.sha256.items():
        if not (folder / name).is_file():
            raise SourceBundleError(f"cannot quantize {folder}: {name} is missing")
        if sha256_file(folder / name) != want:
            raise SourceBundleError(f"cannot quantize {folder}: {name} does not match its checksum in the manifest "
                                    f"(the file is corrupted or was edited)")
    q = manifest.quantization
    if q:
        raise AlreadyQuantizedError(f"{folder} is already quantized ({q.get('precision')} from "
                                    f"{q.get('source_bundle')}); quantize its fp32 source instead")
    if manifest.dtype != "fp32":
        raise SourceBundleError(f"{folder} is a {manifest.dtype} export; quantization starts from an fp32 export")
    return QwenSource(folder.resolve(), manifest, got)


