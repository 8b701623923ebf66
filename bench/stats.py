"""Medians, ranges and ratios over repeated samples."""
from __future__ import annotations

import statistics


def summary(values: list[float]) -> dict:
    """{"median", "min", "max", "n", "values"} of a list of numbers (None entries are dropped)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": [round(v, 6) for v in values]}


def ratio(numerator: dict, denominator: dict) -> float | None:
    """Ratio of two summaries' medians."""
    a, b = numerator.get("median"), denominator.get("median")
    if a is None or not b:
        return None
    return a / b


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict:
    """Summary of the per-repeat ratios numerator[i] / denominator[i] (samples taken side by side)."""
    pairs = [a / b for a, b in zip(numerator, denominator) if a is not None and b]
    return summary(pairs)
