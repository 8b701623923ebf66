"""The export itself, timed and measured phase by phase: `python -m bench.export_memory --size 7b`.

    python -m bench.export_memory [--size 7b] [--dtype fp16|fp32] [--checkpoint DIR] [--out FILE]

A benchmark, not a test: it builds the fixture checkpoint if it is missing (``checkpoints/<size>``,
in a child process, its time and peak recorded), then runs ``python -m export CKPT --memory-log``
in a child process of its own (this one holds nothing), and writes

    bench/results/export-<size>-<dtype>-<machine>-<date>.json   every phase's peak RSS (anonymous and
                                                                 mapped), its seconds, the export's stated
                                                                 expected peak, the parity reached, the tolerances
                                                                 and the noise they came from, the machine's load
    ... .md                                                      the same as tables

The peaks are the export's own ``--memory-log`` (``export/memory_log.py``: VmHWM reset per phase).
The bundle goes to ``build/bench/export-<size>/bundle`` (replaced each run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from . import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
_GB = 1e9


def _run(command: list[str], log_path: Path) -> tuple[int, float, float, float]:
    """(exit status, seconds, the child's peak RSS in GB as the kernel counts it, its CPU seconds) of
    ``command``, its output to a file.  CPU seconds against wall seconds tell a loaded machine apart."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    peak = after.ru_maxrss * 1024 / _GB if after.ru_maxrss > before.ru_maxrss else float("nan")
    return done.returncode, seconds, peak, cpu


def _stated_need(log_text: str) -> str | None:
    found = re.search(r"this export needs (about [0-9.]+ GB at its peak[^;\n]*)", log_text)
    return found.group(1) if found else None


def measure(size: str, dtype: str | None, checkpoint: Path, bundle: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"size": size, "dtype": dtype or "the checkpoint's own", "machine": machine.describe(),
                    "versions": machine.versions(), "load_average_start": os.getloadavg(),
                    "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if not (checkpoint / "config.json").is_file():
        rc, seconds, peak, cpu = _run([sys.executable, "-m", "fixtures", str(checkpoint), "--size", size],
                                      work / "fixture.log")
        result["fixture"] = {"seconds": seconds, "peak_gb": peak, "cpu_seconds": cpu, "exit_status": rc}
        if rc != 0:
            raise SystemExit(f"the fixture failed; see {work / 'fixture.log'}")
    memory_log = work / "memory.json"
    command = [sys.executable, "-m", "export", str(checkpoint), "--out", str(bundle), "--force",
               "--memory-log", str(memory_log)] + (["--dtype", dtype] if dtype else [])
    rc, seconds, _, cpu = _run(command, work / "export.log")
    text = (work / "export.log").read_text()
    result.update({"command": " ".join(command[1:]), "exit_status": rc, "wall_seconds": seconds, "cpu_seconds": cpu,
                   "load_average_end": os.getloadavg(), "stated_need": _stated_need(text),
                   "log_tail": text.splitlines()[-6:]})
    if memory_log.is_file():
        result["memory"] = json.loads(memory_log.read_text())
    manifest = bundle / "manifest.json"
    if rc == 0 and manifest.is_file():
        m = json.loads(manifest.read_text())
        result["parity"] = {key: {"difference": m["parity"][key], "tolerance": m["parity_tolerance"][key],
                                  "rule": m["parity_rule"][key],
                                  "noise": (m.get("parity_fp16_noise") or m.get("parity_fp32_noise") or {}).get(key)}
                            for key in m["parity"]}
        result["bundle_dtype"] = m["dtype"]
    return result


def table(result: dict) -> str:
    """The result as markdown: one row per phase, then the parity."""
    memory = result.get("memory") or {}
    checkpoint = memory.get("checkpoint_gb") or float("nan")
    lines = [f"# Export of `{result['size']}` ({result.get('bundle_dtype', result['dtype'])}) on "
             f"{result['machine']['cpu_model']} ({result['machine']['logical_cpus']} CPUs), {result['started']}",
             "", f"- wall time {result['wall_seconds']:.0f} s ({result['wall_seconds'] / 60:.1f} min), "
             f"exit status {result['exit_status']}; {result.get('cpu_seconds', float('nan')):.0f} CPU seconds; load average {result['load_average_start'][0]:.1f} at the "
             f"start, {result['load_average_end'][0]:.1f} at the end",
             f"- peak RSS {memory.get('peak_gb', float('nan')):.2f} GB in `{memory.get('peak_phase')}` = "
             f"{(memory.get('peak_over_checkpoint') or float('nan')):.2f}x the checkpoint ({checkpoint:.2f} GB); "
             f"stated before it started: {result.get('stated_need')}"]
    if "fixture" in result:
        lines.append(f"- the fixture written in {result['fixture']['seconds']:.0f} s, peak RSS "
                     f"{result['fixture']['peak_gb']:.2f} GB")
    lines += ["", "| phase | seconds | peak RSS GB | x checkpoint | anonymous GB | mapped GB |", "|---|---:|---:|---:|---:|---:|"]
    for name, p in (memory.get("phases") or {}).items():
        lines.append(f"| {name} | {p['seconds']:.1f} | {p['peak_gb']:.2f} | {p['peak_gb'] / checkpoint:.2f} | "
                     f"{p['anon_gb']:.2f} | {p['file_gb']:.2f} |")
    if "parity" in result:
        lines += ["", "| key | difference | tolerance | tolerance / difference | noise | rule |", "|---|---:|---:|---:|---:|---|"]
        for key, p in result["parity"].items():
            ratio = p["tolerance"] / p["difference"] if p["difference"] else float("inf")
            noise = f"{p['noise']:.2e}" if p["noise"] is not None else "-"
            lines.append(f"| {key} | {p['difference']:.2e} | {p['tolerance']:.2e} | {ratio:.1f}x | {noise} | {p['rule']} |")
    else:
        lines += ["", "The export failed: " + " / ".join(result.get("log_tail", [])[-2:])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="7b", help="fixture size (default 7b: LLaVA-1.5-7B's shapes, fp16)")
    parser.add_argument("--dtype", choices=["fp16", "fp32"], help="default: the checkpoint's own")
    parser.add_argument("--checkpoint", type=Path, help="default: checkpoints/<size> (built when missing)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/export-<size>-<dtype>-<machine>-<date>.json)")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or ROOT / "checkpoints" / args.size
    work = ROOT / "build" / "bench" / f"export-{args.size}"
    result = measure(args.size, args.dtype, checkpoint, work / "bundle", work)
    dtype = result.get("bundle_dtype", args.dtype or "default")
    out = args.out or RESULTS / (f"export-{args.size}-{dtype}-{machine.slug(result['machine'])}-"
                                 f"{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(result))
    print(table(result))
    print(f"written: {out} and {out.with_suffix('.md')}")
    return result["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
