"""A bundle folder, opened: its manifest, graphs by role, calibration and engine records, every one verified.

    manifest.sha256 --digest of--> manifest.json --sha256 table--> graphs, weights, tokenizer, calibration.json
         (1) the manifest is the one written   (3) every file is the one signed
    (2) every field typed and in range (fused records and IO specs too); every file named, and every
        symlink among them, stays inside the folder
    engines/<build>/engines.json   each names the manifest digest it was built from (read, checked when loaded)

The manifest's ``family`` says whose it is: none is LLaVA's (``graphs/manifest.py``), ``qwen2_5_vl`` /
``qwen3_vl`` a Qwen bundle's (``graphs/qwen_manifest.py``); ``Bundle.family`` is that ``runtime.families.Family``.
Both are checked the same way; another family is an ``UnsupportedFamilyError`` naming the supported ones.

A bundle is trusted only when all three hold.  ``verify_checksums=False`` skips (1) and (3), never (2);
such a bundle answers, but is never re-signed (``runtime/bundle_write.py``, the one place that writes).
A ``calibration.json`` that the digest table does not list (a bundle calibrated before calibrations were
signed) is refused with checks on: delete it and calibrate again, which signs it.
The digests catch accidental edits and corruption; whoever can write the folder can rewrite the
manifest and its digest together, so they are no defence against a deliberate change.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, SCHEMA_VERSION, Manifest, manifest_digest_line
from graphs.manifest_fields import ManifestFieldError, fused_record_files
from graphs.qwen_manifest import QWEN_FAMILIES, QWEN_SCHEMA_VERSION, QwenManifest, QwenManifestError

from .calibration_file import CALIBRATION_FILE, Calibration, read_calibration
from .engine_layout import builds_in
from .errors import BundleError
from .families import FAMILIES, LLAVA, Family, UnsupportedFamilyError

GRAPH_ROLES = ("vision", "embed", "decoder")


@dataclass(frozen=True)
class FusedPair:
    """A fused decoder pair of the bundle (``fused_decoders[dtype]``): its two graphs and their weights file."""

    dtype: str
    plain: Path
    steered: Path
    data: Path
    record: dict


@dataclass(frozen=True, eq=False)
class Bundle:
    folder: Path
    manifest: Manifest | QwenManifest  # the family's manifest (``family``)
    manifest_sha256: str               # the digest of manifest.json's bytes (engine records name it)
    calibration: Calibration | None    # calibration.json, read and checked; None when there is none
    verified: bool                     # digests checked (only a verified bundle is ever re-signed)
    family: Family = LLAVA

    @classmethod
    def open(cls, folder: "str | Path | Bundle", verify_checksums: bool = True) -> "Bundle":
        """The bundle at ``folder``; BundleError for a missing, corrupted, edited, unknown or unsafe one."""
        if isinstance(folder, Bundle):
            if verify_checksums and not folder.verified:
                return cls.open(folder.folder, True)
            return folder
        folder = Path(folder).expanduser()
        raw, data = _read_manifest(folder)
        family = _family(folder, data)
        reader = _READERS[family.model_type]
        _check_schema_version(folder, data, family, reader.version)
        if verify_checksums:
            _check_manifest_digest(folder, raw)
        try:
            manifest = reader.parse(data, folder / MANIFEST_FILE)
        except (ManifestFieldError, QwenManifestError, KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{folder / MANIFEST_FILE} is malformed: {e}") from None
        calibration = _check_files(folder, manifest, reader.files(manifest), verify_checksums)
        _check_engine_records(folder)
        return cls(folder, manifest, hashlib.sha256(raw).hexdigest(),
                   read_calibration(folder) if calibration else None, verify_checksums, family)

    # -- what it holds, by role ------------------------------------------------------------

    def path(self, name: str) -> Path:
        """A file the manifest names (checked to stay inside the folder when opened)."""
        return self.folder / name

    def graph(self, role: str) -> Path:
        """The ``vision``, ``embed`` or standard ``decoder`` graph."""
        if role not in GRAPH_ROLES:
            raise BundleError(f"graph role must be one of {', '.join(GRAPH_ROLES)}, got {role!r}")
        return self.path(_READERS[self.family.model_type].graph_file(self.manifest, role))

    def fused_pair(self, dtype: str) -> FusedPair:
        """The fused pair of ``dtype`` (BundleError when the bundle has none of the current layout)."""
        record = (self.manifest.fused_decoders or {}).get(dtype)
        if record is None or "plain" not in record:
            have = ", ".join(sorted(self.manifest.fused_decoders or {})) or "none"
            raise BundleError(f"{self.folder} has no fused {dtype} decoder pair (fused decoders: {have})")
        return FusedPair(dtype, *(self.path(record[k]) for k in ("plain", "steered", "data")), record)

    def engine_builds(self) -> list[tuple[Path, dict | None]]:
        """Every ``engines/<build>/engines.json`` with its record (None where unreadable)."""
        return builds_in(self.folder)

    @property
    def tokenizer(self) -> Path:
        return self.path(_READERS[self.family.model_type].tokenizer_file(self.manifest))

    @property
    def model_sha256(self) -> str:
        """The manifest's digest less its calibration's: what answers under a given steering depend on (cached
        results and engine builds stay valid when ``just calibrate`` re-signs the bundle)."""
        table = {k: v for k, v in self.manifest.sha256.items() if k != CALIBRATION_FILE}
        unsigned = dataclasses.replace(self.manifest, sha256=table)
        return hashlib.sha256(json.dumps(dataclasses.asdict(unsigned), indent=2, sort_keys=True).encode()).hexdigest()


def _read_manifest(folder: Path) -> tuple[bytes, dict]:
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist (export one with: just export <model> --out {folder})")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}: not a bundle, or an export that did not finish")
    _inside(folder, MANIFEST_FILE)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a manifest: a JSON object was expected, got {type(data).__name__}")
    return raw, data


def _check_schema_version(folder: Path, data: dict, family: Family, want: int) -> None:
    version = data.get("schema_version")
    if version != want:
        raise BundleError(f"{folder / MANIFEST_FILE} has manifest schema version {version!r}; this runtime reads "
                          f"version {want} of a {family.name} manifest (re-export the bundle with this version of the "
                          f"exporter)")


def _check_manifest_digest(folder: Path, raw: bytes) -> None:
    digest_path = folder / MANIFEST_DIGEST_FILE
    if not digest_path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_DIGEST_FILE} (the digest of its manifest): re-export the "
                          f"bundle, or load it with verify_checksums=False to skip every checksum")
    _inside(folder, MANIFEST_DIGEST_FILE)
    want = digest_path.read_text(errors="replace").split()[:1]
    got = manifest_digest_line(raw).split()[0]
    if want != [got]:
        shown = want[0][:12] if want else "nothing"
        raise BundleError(f"{folder / MANIFEST_FILE} does not match {MANIFEST_DIGEST_FILE} (sha256 {got[:12]}..., "
                          f"expected {shown}...): the manifest was edited or corrupted; re-export the bundle")


def _family(folder: Path, data: dict) -> Family:
    """The manifest's family: LLaVA when it names none (every LLaVA manifest), else one of the Qwen ones."""
    family = data.get("family", LLAVA.model_type)
    if family not in _READERS:
        supported = ", ".join(f"{f.model_type} ({f.name})" for f in FAMILIES.values())
        raise UnsupportedFamilyError(f"{folder / MANIFEST_FILE} is of family {family!r}, which this runtime does "
                                     f"not answer; supported families: {supported}")
    return FAMILIES[family]


def _llava_files(manifest: Manifest) -> list[str]:
    return [*manifest.graphs.values(), manifest.tokenizer_file,
            *(f for record in (manifest.fused_decoders or {}).values() for f in fused_record_files(record))]


@dataclass(frozen=True)
class _Reader:
    """How one family's manifest is read: its schema version, its parser, and where it names its files."""

    version: int
    parse: Callable[[dict, Path], Manifest | QwenManifest]
    files: Callable[..., list[str]]              # every file it names: graphs, tokenizer, fused pairs' files...
    graph_file: Callable[..., str]               # (manifest, role) -> the graph's file
    tokenizer_file: Callable[..., str]


_LLAVA_READER = _Reader(SCHEMA_VERSION, lambda data, path: Manifest.from_dict(data), _llava_files,
                        lambda m, role: m.graphs[role], lambda m: m.tokenizer_file)
_QWEN_READER = _Reader(QWEN_SCHEMA_VERSION, lambda data, path: QwenManifest.from_dict(data, "the Qwen manifest"),
                       QwenManifest.named_files, QwenManifest.graph_file, lambda m: m.files["tokenizer"])
_READERS = {LLAVA.model_type: _LLAVA_READER, **{f: _QWEN_READER for f in QWEN_FAMILIES}}


def _check_files(folder: Path, manifest: Manifest | QwenManifest, needed: list[str], verify_checksums: bool) -> bool:
    """Every file named is inside, present and (checks on) as signed; returns whether calibration.json is there."""
    calibrated = (folder / CALIBRATION_FILE).exists() or (folder / CALIBRATION_FILE).is_symlink()
    for name in [*needed, *manifest.sha256, *([CALIBRATION_FILE] if calibrated else [])]:
        _inside(folder, name)
    missing = [name for name in needed if not (folder / name).is_file()]
    missing += [name for name in manifest.sha256 if name not in missing and not (folder / name).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} is missing {', '.join(sorted(missing))}")
    if not verify_checksums:
        return calibrated
    unlisted = [name for name in needed if name not in manifest.sha256]
    if unlisted:
        raise BundleError(f"{folder / MANIFEST_FILE} lists no sha256 for {', '.join(unlisted)}: the checksum table "
                          f"is incomplete; re-export, or load with verify_checksums=False to skip every checksum")
    if calibrated and CALIBRATION_FILE not in manifest.sha256:
        raise BundleError(f"{folder / CALIBRATION_FILE} is not in the manifest's digest table (a bundle calibrated "
                          f"before calibrations were signed), so it is not trusted to steer: delete it and run "
                          f"just calibrate {folder} DATA again (which signs it), or load with verify_checksums=False")
    for name, want in manifest.sha256.items():
        got = sha256_file(folder / name)
        if got != want:
            raise BundleError(f"{folder / name} does not match its checksum in the manifest "
                              f"(sha256 {got[:12]}..., expected {want[:12]}...): the file is corrupted or was edited")
    return calibrated


def _check_engine_records(folder: Path) -> None:
    """Every engine build folder and the files its record names stay inside the bundle (records are read,
    and matched to this manifest's digest, when TensorRT loads them: ``runtime/engine_layout.py``)."""
    for build, record in builds_in(folder):
        _inside(folder, str(build.relative_to(folder)))
        for entry in ((record or {}).get("engines") or {}).values():
            for key in ("engine", "context_model"):
                name = entry.get(key) if isinstance(entry, dict) else None
                if isinstance(name, str):
                    _inside(folder, str(build.relative_to(folder) / name))


def _inside(folder: Path, name: str) -> None:
    """``name`` (symlinks followed) must lead to a place inside ``folder``."""
    if not (folder / name).resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"{folder / name} leads outside the bundle folder {folder}: refused")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["Bundle", "FusedPair", "GRAPH_ROLES", "sha256_file"]
