"""Per-phase peak resident memory of the export process (``python -m export ... --memory-log FILE``).

    with memory.phase("trace decoder"):      # entry: the kernel's peak (VmHWM) reset to the current RSS
        ...                                  #        (/proc/self/clear_refs "5"); a thread samples
                                             #        RssAnon / RssFile every 20 ms meanwhile
                                             # exit:  VmHWM = this phase's peak, exact
    memory.write()   ->  FILE (JSON): {phase: {peak_gb, anon_gb, file_gb, seconds}, peak_gb, checkpoint_gb, ...}

``anon_gb`` / ``file_gb`` are RssAnon and RssFile at the phase's highest *sample* (a lower bound
of the peak): they tell copies in the process's own memory from memory-mapped file pages (the
checkpoint's safetensors, the ONNX weights ONNX Runtime maps).  Where clear_refs cannot be
written (not Linux, or not allowed), the peaks are the sampled maxima and the JSON says so.

Resetting VmHWM changes what an outside observer reads from /proc/PID/status (and the exit
status's ``ru_maxrss``): this module is only active when asked for; ``NO_MEMORY_LOG`` does nothing.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path

_GB = 1e9
_FIELDS = re.compile(r"^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB", re.M)


def status_bytes() -> dict[str, int]:
    """{VmHWM, VmRSS, RssAnon, RssFile} of this process, in bytes (empty off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    return {k: int(v) * 1024 for k, v in _FIELDS.findall(text)}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class MemoryLog:
    """Records each ``phase``'s peak RSS; ``write`` saves them to ``path`` and logs one line per phase."""

    def __init__(self, path: Path, log=None, checkpoint_bytes: int = 0, interval_s: float = 0.02):
        self.path = Path(path)
        self.log = log or (lambda message: None)
        self.checkpoint_bytes = checkpoint_bytes
        self.interval_s = interval_s
        self.phases: dict[str, dict] = {}
        self.exact = True

    @contextlib.contextmanager
    def phase(self, name: str):
        self.exact = _reset_peak() and self.exact
        highest: dict[str, int] = status_bytes()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval_s):
                now = status_bytes()
                if now.get("VmRSS", 0) > highest.get("VmRSS", 0):
                    highest.update(now)

        sampler = threading.Thread(target=sample, name=f"memory-log {name}", daemon=True)
        t0 = time.perf_counter()
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join()
            end = status_bytes()
            if end.get("VmRSS", 0) > highest.get("VmRSS", 0):
                highest.update(end)
            peak = end.get("VmHWM", 0) if self.exact else highest.get("VmRSS", 0)
            record = {"peak_gb": peak / _GB, "anon_gb": highest.get("RssAnon", 0) / _GB,
                      "file_gb": highest.get("RssFile", 0) / _GB, "end_gb": end.get("VmRSS", 0) / _GB,
                      "seconds": time.perf_counter() - t0}
            self.phases[name] = record
            self.log(f"memory: {name}: peak RSS {record['peak_gb']:.2f} GB (at the highest sample "
                     f"anon {record['anon_gb']:.2f} + file {record['file_gb']:.2f} GB)")

    def summary(self) -> dict:
        peak = max((p["peak_gb"] for p in self.phases.values()), default=0.0)
        checkpoint = self.checkpoint_bytes / _GB
        return {"peak_gb": peak, "checkpoint_gb": checkpoint,
                "peak_over_checkpoint": peak / checkpoint if checkpoint else None,
                "peak_phase": max(self.phases, key=lambda k: self.phases[k]["peak_gb"]) if self.phases else None,
                "method": "VmHWM reset per phase" if self.exact else "RSS sampled every "
                                                                    f"{self.interval_s * 1000:.0f} ms",
                "phases": self.phases}

    def write(self) -> dict:
        summary = self.summary()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(summary, indent=2) + "\n")
        ratio = summary["peak_over_checkpoint"]
        self.log(f"memory: peak RSS {summary['peak_gb']:.2f} GB in {summary['peak_phase']}"
                 + (f" = {ratio:.2f}x the checkpoint ({summary['checkpoint_gb']:.2f} GB)" if ratio else "")
                 + f"; per phase: {self.path}")
        return summary


class _NoMemoryLog:
    """The default: phases cost nothing and the process's VmHWM is left alone."""

    def phase(self, name: str):
        return contextlib.nullcontext()

    def write(self) -> None:
        return None


NO_MEMORY_LOG = _NoMemoryLog()


def checkpoint_bytes(folder: Path) -> int:
    """The size of a checkpoint's weight files (safetensors / PyTorch bins) on disk."""
    folder = Path(folder)
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern))
