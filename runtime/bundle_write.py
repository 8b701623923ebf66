"""The one place a bundle is written: a new one, a changed one, and the digest table that signs both.

    new bundle (export, quantize)          changed bundle (fuse, calibrate; only a verified one)
    .<out>.partial-<pid>/  <- writer       .<name>.update-<pid>/  <- hard links of the unchanged files,
         |  sign (digest table, then            |                     the new files, the changed manifest
         |  manifest.json, digest last)         |  sign
         v  rename (the old <out> moved         v  rename over <name> (the old one moved aside, removed)
    <out>/    aside first, removed after)  <name>/

A reader sees the old bundle or the new one, never half of either.  The digest table lists every file at
the top of the folder but the manifest and its digest: graphs, weights, tokenizer, calibration.json,
reports.  A bundle opened with ``verify_checksums=False`` (or edited since it was opened) is never re-signed.
Both manifests are signed here: LLaVA's (``graphs.manifest.Manifest``) and Qwen's (``graphs.qwen_manifest``);
each offers ``to_json`` and a checked ``from_dict``, and ``sign`` re-reads what it signs with its own class.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, Manifest, manifest_digest_line
from graphs.qwen_manifest import QwenManifest

from .bundle import Bundle, sha256_file
from .calibration_file import CALIBRATION_FILE, encode_calibration
from .errors import BundleError, BundleExistsError

_UNSIGNED = (MANIFEST_FILE, MANIFEST_DIGEST_FILE)
AnyManifest = Manifest | QwenManifest


@contextmanager
def new_bundle(out: str | Path, force: bool = False) -> Iterator[Path]:
    """The folder a new bundle is written into (sign it with ``sign``), renamed to ``out`` when the block
    ends; removed when it fails.  BundleExistsError when ``out`` holds something and ``force`` is not given."""
    out = Path(out).expanduser().resolve()
    check_target(out, force)
    with staged_folder(out) as partial:
        yield partial
        if not (partial / MANIFEST_DIGEST_FILE).is_file():
            raise BundleError(f"the bundle written for {out} was never signed")   # a writer's bug


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """``.<target>.partial-<pid>`` beside ``target``, renamed over it when the block ends (an engine build too)."""
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        _replace_folder(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def check_target(out: Path, force: bool) -> None:
    """BundleExistsError when ``out`` cannot take a new bundle (it holds one, or other things, and no ``force``)."""
    if not out.exists() or force:
        return
    if (out / MANIFEST_FILE).exists():
        raise BundleExistsError(f"{out} already holds a bundle; pass --force to replace it")
    if not out.is_dir() or any(out.iterdir()):
        raise BundleExistsError(f"{out} exists and is not an empty folder; pass --force to replace it")


def sign(folder: Path, manifest: AnyManifest, known: dict[str, str] | None = None) -> AnyManifest:
    """Write ``manifest`` (LLaVA's or Qwen's) with the digest table of ``folder`` (``known`` digests reused by
    name), every field checked first, then its digest file: each a temporary file renamed into place, the
    digest last."""
    if not isinstance(manifest, (Manifest, QwenManifest)):
        raise TypeError(f"sign takes a Manifest or a QwenManifest, not {type(manifest).__name__}")
    folder = Path(folder)
    known = known or {}
    table = {p.name: known.get(p.name) or sha256_file(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name not in _UNSIGNED and not p.name.startswith(".")}
    signed = dataclasses.replace(manifest, sha256=table)
    text = signed.to_json() + "\n"
    type(signed).from_dict(json.loads(text))      # ManifestFieldError / QwenManifestError: nothing unchecked is signed
    write_file(folder / MANIFEST_FILE, text.encode())
    write_file(folder / MANIFEST_DIGEST_FILE, manifest_digest_line(text.encode()).encode())
    return signed


def update_bundle(bundle: Bundle, files: dict[str, bytes | Path] | None = None, remove: tuple[str, ...] = (),
                  **changes) -> Bundle:
    """``bundle`` with ``files`` added or replaced (bytes, or a finished file moved in), ``remove`` gone and
    the manifest's ``changes`` made, re-signed and renamed into place; returns it opened."""
    files = dict(files or {})
    if not bundle.verified:
        raise BundleError(f"{bundle.folder} was opened without verifying its checksums, so it is not re-signed: "
                          f"open it with verify_checksums=True")
    folder = bundle.folder.resolve()
    if hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest() != bundle.manifest_sha256:
        raise BundleError(f"{folder / MANIFEST_FILE} has changed since the bundle was opened; open it again")
    staged = folder.parent / f".{folder.name}.update-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    skip = {*_UNSIGNED, *files, *remove}
    try:
        shutil.copytree(folder, staged, symlinks=True, copy_function=_link,
                        ignore=lambda at, names: [n for n in names if Path(at) == folder and
                                                  (n in skip or n.startswith("."))])
        for name, content in files.items():
            if isinstance(content, bytes):
                write_file(staged / name, content)
            else:
                os.replace(content, staged / name)
        unchanged = {n: d for n, d in bundle.manifest.sha256.items() if n not in files and n not in remove}
        sign(staged, dataclasses.replace(bundle.manifest, **changes), unchanged)
        Bundle.open(staged, verify_checksums=False)     # every field, file and calibration read before it is published
        _replace_folder(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    opened = Bundle.open(folder, verify_checksums=False)      # just signed here: the digests are ours
    return dataclasses.replace(opened, verified=True)


def write_calibration(bundle: Bundle | str | Path, document: dict) -> Bundle:
    """``calibration.json`` into the bundle (checked as every reader checks it, then signed); returns the bundle."""
    opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)      # checks on
    return update_bundle(opened, files={CALIBRATION_FILE: encode_calibration(document)})


def write_file(path: Path, content: bytes) -> Path:
    """``path`` written whole or not at all: a temporary file beside it, flushed to disk, renamed over it."""
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _link(source: str, target: str) -> None:
    """An unchanged file shares its bytes with the old bundle (a copy where the file system has no hard links)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace_folder(partial: Path, out: Path) -> None:
    """Rename the finished ``partial`` folder to ``out``, replacing what was there."""
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        partial.rename(out)
