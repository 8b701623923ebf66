"""The checkpoint and bundle a benchmark runs on: built once under build/bench/<size>/, then reused.

The 1b size reuses the lead's build/1b/checkpoint and build/1b/bundle (a second 5.6 GB copy
would be a waste): it waits for nothing and builds nothing; it refuses to run until the bundle
is complete (build/1b/bundle/manifest.json) and no export of it is still running.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from fixtures import build_checkpoint
from graphs.manifest import MANIFEST_FILE

ROOT = Path(__file__).resolve().parent.parent
SHARED = {"1b": ROOT / "build" / "1b"}        # sizes whose artefacts are built elsewhere


class ArtifactsNotReady(RuntimeError):
    pass


@dataclass(frozen=True)
class Artifacts:
    size: str
    checkpoint: Path
    bundle: Path
    built: list[str]          # what this call built ("checkpoint", "bundle"), empty when reused


def folder_for(size: str) -> Path:
    return SHARED.get(size, ROOT / "build" / "bench" / size)


def export_running(folder: Path) -> bool:
    """Whether a `python -m export ... <folder>` process is still running (pgrep -f)."""
    rel = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    try:
        found = subprocess.run(["pgrep", "-f", f"export {rel}"], capture_output=True, text=True)
    except FileNotFoundError:
        return False
    return bool(found.stdout.strip())


def prepare(size: str, log=print) -> Artifacts:
    """Build (or reuse) the checkpoint and the bundle of ``size``."""
    folder = folder_for(size)
    checkpoint, bundle = folder / "checkpoint", folder / "bundle"
    built = []
    if size in SHARED:
        if export_running(folder):
            raise ArtifactsNotReady(f"an export into {folder} is still running; wait for it (pgrep -f 'export {folder}')")
        if not (bundle / MANIFEST_FILE).is_file() or not (checkpoint / "config.json").is_file():
            raise ArtifactsNotReady(f"{checkpoint} or {bundle} is not complete; build it with "
                                    f"`python -m fixtures {checkpoint} --size {size}` and "
                                    f"`python -m export {checkpoint} --out {bundle}`")
        return Artifacts(size, checkpoint, bundle, built)
    if not (checkpoint / "config.json").is_file():
        log(f"building the {size} checkpoint in {checkpoint}")
        build_checkpoint(checkpoint, size)
        built.append("checkpoint")
    if not (bundle / MANIFEST_FILE).is_file() or "checkpoint" in built:
        from export import export_llava   # optional: it imports onnx (the export extra); a built bundle needs neither

        log(f"exporting {checkpoint} to {bundle}")
        export_llava(str(checkpoint), bundle, force=True, log=log)
        built.append("bundle")
    return Artifacts(size, checkpoint, bundle, built)
