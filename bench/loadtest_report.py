"""The load test's report: one table of both phases, the serial answers, the verdicts."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def report(result: dict, console: Console) -> None:
    phases = [result["phase1"], result["phase2"]]
    table = Table(title="load test", title_justify="left")
    table.add_column("")
    for p, label in zip(phases, ("phase 1", "phase 2 (overload)")):
        table.add_column(f"{label}: {p['clients']} clients, {p['seconds']:g} s", justify="right")

    def row(name, fn):
        table.add_row(name, *(fn(p) for p in phases))
    row("requests", lambda p: str(p["requests"]))
    row("200 / 503 / other", lambda p: f"{p['ok']} / {p['refused_503']} / {p['other']}")
    row("answers unlike the serial one", lambda p: str(p["mismatched"]))
    row("503 without Retry-After", lambda p: str(p["refused_without_retry_after"]))
    row("latency of 200s p50 / p95 / max, ms",
        lambda p: " / ".join(_ms(p["latency_ok_s"][k]) for k in ("p50", "p95", "max")))
    row("latency of 503s p50, ms", lambda p: _ms(p["latency_503_s"]["p50"]))
    row("throughput, answers/s", lambda p: f"{p['throughput_ok_per_s']:.2f}")
    row("image prefix from the cache", lambda p: f"{p['image_cache_hits']} of {p['ok']}")
    row("server RSS start / max / end, MiB",
        lambda p: " / ".join(_mib(p["rss"][k]) for k in ("start_bytes", "max_bytes", "end_bytes")))
    row("RSS growth, middle to end",
        lambda p: "-" if p["rss"]["second_half_growth"] is None else f"{p['rss']['second_half_growth']:+.1%}")
    row("CPU cores: server / clients / others",
        lambda p: " / ".join("-" if p["cpu_cores"][k] is None else f"{p['cpu_cores'][k]:.2f}"
                             for k in ("server", "load_generator", "other_processes")))
    console.print(table)
    console.print(f"serial answers: p50 {_ms(result['serial']['latency_s']['p50'])} ms; {result['note']}",
                  highlight=False)
    if result["server_log_errors"]:
        console.print(f"[yellow]the server logged {len(result['server_log_errors'])} error line(s), e.g. "
                      f"{result['server_log_errors'][0]}[/]")
    verdict_table = Table(title="verdicts", title_justify="left")
    for column in ("", "rule", "value"):
        verdict_table.add_column(column)
    for name, v in result["verdicts"].items():
        verdict_table.add_row("[green]pass[/]" if v["ok"] else "[red]FAIL[/]", v["rule"], str(v["value"]))
    console.print(verdict_table)
    console.print("[bold green]all verdicts hold[/]" if result["passed"] else "[bold red]a verdict failed[/]")
