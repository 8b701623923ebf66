"""How much memory the machine can still give: MemAvailable (Linux), for the checks that refuse up front."""
from __future__ import annotations

from pathlib import Path


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (unknown: the run is tried)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
