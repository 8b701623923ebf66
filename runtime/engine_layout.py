"""Where a bundle's engines live, what ``engines.json`` records, and which build this machine may load.

Pure Python (json + pathlib): the runtime imports it on a robot.  Engines are tied to the TensorRT
version and the GPU that built them, so each build has its own folder, named for both:

    <bundle>/engines/trt-10.3.0-sm87/engines.json      (TensorRT 10.3.0, compute capability 8.7: Orin)

``select_engines`` returns the build for this machine, ``None`` when the bundle has none at all, and
raises ``EngineError`` (naming both sides and the command that rebuilds) when the bundle only has
builds for another TensorRT or GPU, or builds older than the bundle's graphs.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

ENGINES_DIR = "engines"
RECORD_FILE = "engines.json"
TIMING_CACHE_FILE = "timing.cache"
RECORD_SCHEMA = 1
GRAPHS = ("vision", "embed", "decoder")


class EngineError(ValueError):
    """Engines that cannot be used here, or a bad request to build them (the message says what to do)."""


@dataclass(frozen=True)
class EngineTarget:
    """A TensorRT version and a GPU: what an engine is tied to."""

    tensorrt: str                 # "10.3.0" (major.minor.patch)
    compute_capability: str       # "8.7"
    gpu: str = ""                 # "Orin", "NVIDIA GeForce RTX 4090" (informational: not part of the match)

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def folder(self) -> str:
        return f"trt-{self.tensorrt}-{self.sm}"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.sm}" + (f" ({self.gpu})" if self.gpu else "")


def engine_file(graph: str) -> str:
    return f"{graph}.engine"


def context_model_file(graph: str) -> str:
    return f"{graph}_ctx.onnx"


def engines_root(bundle: Path) -> Path:
    return Path(bundle) / ENGINES_DIR


def rebuild_command(bundle: Path, record: dict | None = None) -> str:
    """The command that rebuilds, with the limits of ``record`` (a previous build) when given."""
    command = f"just engines {bundle}"
    if record:
        command += (f" --precision {record['precision']} --max-prompt {record['max_prompt']}"
                    f" --max-context {record['max_context']}")
    return command


@dataclass(frozen=True)
class EngineSet:
    """A build this machine can load: its folder and its ``engines.json``."""

    folder: Path
    record: dict

    def context_model(self, graph: str) -> Path:
        return self.folder / self.record["engines"][graph]["context_model"]

    @property
    def max_prompt(self) -> int:
        return int(self.record["max_prompt"])

    @property
    def max_context(self) -> int:
        return int(self.record["max_context"])

    @property
    def target(self) -> EngineTarget:
        return record_target(self.record)


def record_target(record: dict) -> EngineTarget:
    return EngineTarget(str(record["tensorrt"]), str(record["compute_capability"]), str(record.get("gpu", "")))


def read_record(folder: Path) -> dict:
    """``folder/engines.json``, checked for the keys the runtime reads; EngineError if malformed."""
    path = Path(folder) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f"{path} cannot be read ({type(e).__name__}: {e}); delete {folder} and rebuild") from None
    problems = []
    if not isinstance(record, dict) or record.get("schema_version") != RECORD_SCHEMA:
        problems.append(f"schema_version is not {RECORD_SCHEMA}")
    else:
        for key in ("tensorrt", "compute_capability", "precision", "max_prompt", "max_context",
                    "bundle_manifest_sha256", "engines"):
            if key not in record:
                problems.append(f"no {key!r}")
        engines = record.get("engines")
        if isinstance(engines, dict):
            problems += [f"no engine for the {g} graph" for g in GRAPHS
                         if not isinstance(engines.get(g), dict) or "context_model" not in engines[g]]
    if problems:
        raise EngineError(f"{path} is malformed ({'; '.join(problems)}); delete {folder} and rebuild")
    return record


def write_record(folder: Path, record: dict) -> Path:
    path = Path(folder) / RECORD_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def builds_in(bundle: Path) -> list[tuple[Path, dict | None]]:
    """Every ``engines/*/engines.json`` of the bundle, with its record (None where it is unreadable)."""
    root = engines_root(bundle)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []:
        if (folder / RECORD_FILE).is_file():
            try:
                found.append((folder, read_record(folder)))
            except EngineError:
                found.append((folder, None))
    return found


def select_engines(bundle: Path, target: EngineTarget, manifest_sha256: str | tuple[str, ...]) -> EngineSet | None:
    """The build of ``bundle`` for ``target``; None if the bundle has no engines at all.

    Raises EngineError when the bundle has engines but none for this TensorRT and GPU, when the
    record in this machine's folder names another TensorRT or GPU (a folder copied or renamed), when
    the engines were built from an earlier export of the bundle, or when a file is missing.
    """
    bundle = Path(bundle)
    builds = builds_in(bundle)
    mine = engines_root(bundle) / target.folder
    if not (mine / RECORD_FILE).is_file():
        if not builds:
            return None
        theirs = [f"{record_target(r).describe()} ({folder.name}/)" if r else f"{folder.name}/ (unreadable {RECORD_FILE})"
                  for folder, r in builds]
        previous = next((r for _, r in builds if r), None)
        raise EngineError(
            f"{engines_root(bundle)} has TensorRT engines built for {', '.join(theirs)}, but this machine runs "
            f"{target.describe()}. An engine is tied to the TensorRT version and the GPU that built it, so "
            f"none is loaded. Rebuild them here: {rebuild_command(bundle, previous)} (or load with "
            f"providers=['cuda'] to run without TensorRT)")
    record = read_record(mine)
    built_for = record_target(record)
    if (built_for.tensorrt, built_for.compute_capability) != (target.tensorrt, target.compute_capability):
        raise EngineError(
            f"{mine} holds engines built for {built_for.describe()}, not for this machine's {target.describe()} "
            f"(the folder was copied or renamed). Rebuild them here: {rebuild_command(bundle, record)}")
    # the bundle's model_sha256 (engines built now), or its manifest file's digest (engines built before)
    accepted = (manifest_sha256,) if isinstance(manifest_sha256, str) else manifest_sha256
    if record["bundle_manifest_sha256"] not in accepted:
        raise EngineError(
            f"the engines in {mine} were built from an earlier export of {bundle} (its manifest.json has changed "
            f"since). Rebuild them: {rebuild_command(bundle, record)}")
    missing = [name for g in GRAPHS for name in (record["engines"][g]["context_model"], record["engines"][g]["engine"])
               if not (mine / name).is_file()]
    if missing:
        raise EngineError(f"{mine} is missing {', '.join(missing)}; rebuild: {rebuild_command(bundle, record)}")
    if built_for.gpu and target.gpu and built_for.gpu != target.gpu:
        warnings.warn(f"the engines in {mine} were built on a {built_for.gpu}, this is a {target.gpu} with the same "
                      f"compute capability: TensorRT loads them, but they were tuned for the other GPU "
                      f"({rebuild_command(bundle, record)} retunes them)", RuntimeWarning, stacklevel=3)
    return EngineSet(mine, record)


def no_engines_message(bundle: Path, target: EngineTarget | None) -> str:
    """What happens when TensorRT is asked for and the bundle has no prebuilt engines."""
    which = f"for {target.describe()} " if target else ""
    return (f"{bundle} has no prebuilt TensorRT engines {which}({ENGINES_DIR}/ is absent): ONNX Runtime's TensorRT "
            f"provider builds its own on first use and caches them in {Path(bundle) / 'trt_engines'} (minutes on a "
            f"Jetson). Build them ahead of time with: {rebuild_command(bundle)}")
