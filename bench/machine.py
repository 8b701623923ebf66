"""What ran the benchmark: CPU model, cores, memory, package versions."""
from __future__ import annotations

import os
import platform
import re
from importlib import metadata

PACKAGES = ("onnxruntime", "torch", "transformers", "numpy", "tokenizers", "onnx", "optimum")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted=("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")) -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; falls back to the logical count."""
    cores, phys = set(), "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    cores.add((phys, value.strip()))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def describe() -> dict:
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_flags": cpu_flags(),
            "memory_total_bytes": memory_total_bytes(), "platform": platform.platform(),
            "hostname": platform.node()}


def slug(info: dict) -> str:
    """A file-name-friendly machine name: the CPU model and the core count."""
    model = re.sub(r"\((R|TM|r|tm)\)|CPU|Processor|@.*$", " ", info["cpu_model"])
    model = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "cpu"
    return f"{model}-{info['logical_cpus']}cpu"
