"""Peak resident memory of our runtime, measured in a fresh process that imports only the runtime.

    python -m bench.memory BUNDLE [--tokens 64]   # prints one JSON line

The parent (which holds torch and the reference model) starts it with subprocess, so
neither torch nor the reference pollutes the numbers.  VmHWM (/proc/self/status) is
the process's peak resident set, file-backed (mmapped) pages included.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import ours


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def worker(bundle: str, tokens: int, decoder: str = "standard") -> dict:
    base = _status()
    import runtime                     # measured: the baseline RSS is read before the runtime is imported

    t0 = time.perf_counter()
    vlm = runtime.load(bundle, decoder=decoder)
    load_s = time.perf_counter() - t0
    loaded = _status()
    method = {"kind": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 0.4}
    ours.answer(vlm, ours.scene(0), ours.QUESTION, method, tokens, cold=True)
    answered = _status()
    return {"baseline_rss_bytes": base["VmRSS"], "after_load": loaded, "after_answer": answered,
            "peak_bytes": answered["VmHWM"], "load_s": load_s, "answer_tokens": tokens,
            "torch_imported": "torch" in sys.modules}


def measure(bundle: Path, tokens: int = 64, timeout: float = 1800, decoder: str = "standard") -> dict:
    """Run the worker in a child process; returns its JSON."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.memory", str(bundle), "--tokens", str(tokens),
                           "--decoder", decoder],
                          cwd=root, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the memory worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("bundle")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--decoder", default="standard")
    args = parser.parse_args(argv)
    print(json.dumps(worker(args.bundle, args.tokens, args.decoder)))


if __name__ == "__main__":
    main()
