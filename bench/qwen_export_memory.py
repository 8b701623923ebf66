"""The Qwen export's peak memory on fixture checkpoints, and a linear fit for the real sizes.

    python -m bench.qwen_export_memory [--sizes tiny-qwen2.5-vl mid-qwen2.5-vl large-qwen2.5-vl] [--work DIR]

For each fixture size: the checkpoint is built in a child process (not measured), then exported
(``export.route.export_model``: vision, embed, decoder, parity, the fused pair) in a child process of
its own, which reports its own peak RSS (``ru_maxrss``), once with the fused pair and once without.
Then ``peak = base + k x parameter bytes (fp32)`` is fitted by least squares over the sizes and
evaluated for Qwen2.5-VL-3B (3.75e9 parameters) and 7B (8.29e9).  Printed as JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REAL = {"Qwen2.5-VL-3B": 3.75e9, "Qwen2.5-VL-7B": 8.29e9}
_CHILD = """
import json, resource, sys, time
from export.route import export_model
t = time.time()
export_model(sys.argv[1], sys.argv[2], force=True, fused=sys.argv[3] == "fused", log=lambda m: None)
print(json.dumps({"seconds": time.time() - t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(size: str, work: Path) -> dict:
    ckpt = work / f"ckpt-{size}"
    if not (ckpt / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "fixtures", str(ckpt), "--size", size], check=True,
                       capture_output=True)
    params = (ckpt / "model.safetensors").stat().st_size / 4          # fp32 checkpoint (tied: stored once)
    row = {"size": size, "parameters": params}
    for mode in ("fused", "nofused"):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), str(work / f"bundle-{size}"), mode],
                             check=True, capture_output=True, text=True)
        row[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def fit(rows: list[dict], mode: str) -> dict:
    x = np.array([r["parameters"] * 4 / 1e6 for r in rows])          # MB of fp32 weights
    y = np.array([r[mode]["peak_rss_mb"] for r in rows])
    k, base = np.polyfit(x, y, 1)
    return {"base_mb": float(base), "per_weight_mb": float(k),
            "residual_mb": [float(v) for v in y - (base + k * x)],
            "estimate_gb": {name: float((base + k * p * 4 / 1e6) / 1e3) for name, p in REAL.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.qwen_export_memory")
    parser.add_argument("--sizes", nargs="+", default=["tiny-qwen2.5-vl", "mid-qwen2.5-vl", "large-qwen2.5-vl"])
    parser.add_argument("--work", type=Path, default=Path("build/bench/qwen-export-memory"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [measure(size, args.work) for size in args.sizes]
    result = {"rows": rows, "fit_fused": fit(rows, "fused"), "fit_nofused": fit(rows, "nofused")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
