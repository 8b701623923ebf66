"""python -m bench.loadtest [--bundle DIR] [--clients 16] [--seconds 60] [--overload-clients 64] [...]

The load test of ``python -m serve``, on 127.0.0.1 only: it starts its own server (a child
process on a free port of 127.0.0.1) and always stops it, on errors and Ctrl-C too.

    serial    each request of a fixed set once, one at a time: the reference answers
    phase 1   --clients clients (at most the server's capacity, max_concurrent + max_queue) for
              --seconds: every request succeeds and equals its serial answer; p50/p95 latency,
              throughput, and the server's resident memory (VmRSS every 0.5 s), which stays flat
    phase 2   --overload-clients clients (more than the capacity) for --overload-seconds: the excess
              gets 503 + Retry-After (the client then waits that long, as the openai client does),
              never another error; every 200 still equals its serial answer
    after     the server has drained (/health: nothing running or waiting) and answers correctly

The requests: 8 drawn scenes (scenes.synthetic, 336 px PNG data URLs) x 2 questions x 3
steerings (the bundle's default AdaptVis, none, ScalingVis alpha 1.5), taken round-robin by all
clients.  Decoding is greedy, so "equal" is exact: text, finish reason, token counts, steering, alpha.

The clients are asyncio tasks sharing one httpx.AsyncClient in this process.  They and the server
share this machine's cores, so the CPU each used (and what other processes used meanwhile) is
reported beside the numbers.  Exit status: 0 every verdict holds, 1 one fails, 2 the test could not run.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console

from fixtures import build_checkpoint
from graphs.manifest import MANIFEST_FILE
from scenes import synthetic
from serve.settings import ServeSettings

from . import machine, quiet
from .loadtest_report import report
from .loadtest_server import ROOT, LoadTestError, Server


RESULTS = Path(__file__).resolve().parent / "results"
TINY = ROOT / "build" / "loadtest" / "tiny"           # the default bundle: random tiny weights, built once

IMAGES, IMAGE_SIZE = 8, 336
QUESTIONS = ("Where is the {a} in relation to the {b}?", "Is the {a} to the left of the {b}?")
STEERINGS = {"default": None,                                   # no field: the bundle's calibrated AdaptVis
             "none": {"method": "none"},
             "scalingvis-1.5": {"method": "scalingvis", "alpha": 1.5}}

RSS_EVERY_S = 0.5
FLAT_RSS = 0.10           # phase 1: RSS at the end is at most 10% above RSS at the middle of the phase
DRAIN_TIMEOUT_S = 30      # after phase 2, /health shows nothing running or waiting within this
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class LoadTest:
    """What one run does; every phase is bounded by these numbers."""

    bundle: Path | None = None        # None: the tiny random bundle, built once under build/loadtest/tiny
    clients: int = 16
    seconds: float = 60
    overload_clients: int = 64
    overload_seconds: float = 20
    max_concurrent: int = 2           # passed to the server
    max_queue: int = 32               # passed to the server
    max_tokens: int = 16
    request_timeout_s: float = 120    # one request; a timeout is counted as an error, not raised

    @property
    def capacity(self) -> int:
        return self.max_concurrent + self.max_queue

    def check(self) -> None:
        """Raises ValueError (or serve's SettingsError) for numbers that cannot make the test mean anything."""
        ServeSettings(bundle=".", max_concurrent=self.max_concurrent, max_queue=self.max_queue)
        if self.clients < 1 or self.overload_clients < 1:
            raise ValueError("--clients and --overload-clients must be at least 1")
        if self.seconds <= 0 or self.overload_seconds <= 0 or self.request_timeout_s <= 0:
            raise ValueError("--seconds, --overload-seconds and the request timeout must be positive")
        if not 1 <= self.max_tokens <= ServeSettings(bundle=".").max_tokens_limit:
            raise ValueError(f"--max-tokens must be in [1, {ServeSettings(bundle='.').max_tokens_limit}]")
        if self.clients > self.capacity:
            raise ValueError(f"phase 1 stays below the queue bound: --clients ({self.clients}) must be at most "
                             f"--max-concurrent + --max-queue ({self.capacity})")
        if self.overload_clients <= self.capacity:
            raise ValueError(f"phase 2 overloads the server: --overload-clients ({self.overload_clients}) must "
                             f"exceed --max-concurrent + --max-queue ({self.capacity})")


# -- the bundle and the requests --------------------------------------------------------------

def tiny_bundle(log=print) -> Path:
    """build/loadtest/tiny/bundle: a random tiny LLaVA checkpoint, exported once, then reused."""
    checkpoint, bundle = TINY / "checkpoint", TINY / "bundle"
    if (bundle / MANIFEST_FILE).is_file():
        return bundle
    from export import export_llava   # optional: it imports onnx (the export extra); a built bundle needs neither

    log(f"building the tiny random bundle in {bundle} (once)")
    build_checkpoint(checkpoint, size="tiny", seed=0)
    export_llava(str(checkpoint), bundle, force=True, log=lambda m: None)
    return bundle


@dataclass(frozen=True)
class Request:
    name: str                 # "scene3/q1/none": image, question, steering
    body: bytes               # the JSON body, encoded once


def workload(model: str, max_tokens: int) -> list[Request]:
    """8 scenes x 2 questions x 3 steerings, the scene changing fastest (consecutive requests differ)."""
    specs = synthetic.plan(IMAGES, seed=0, size=IMAGE_SIZE)
    urls = []
    for s in specs:
        buf = io.BytesIO()
        synthetic.render(s.a, s.b, s.boxes, IMAGE_SIZE, s.background).save(buf, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    requests = []
    for steer, steering in STEERINGS.items():
        for q, question in enumerate(QUESTIONS):
            for i, (spec, url) in enumerate(zip(specs, urls)):
                text = question.format(a=spec.a.name, b=spec.b.name)
                body = {"model": model, "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": [{"type": "text", "text": text},
                                                                  {"type": "image_url", "image_url": {"url": url}}]}]}
                if steering is not None:
                    body["steering"] = steering
                requests.append(Request(f"scene{i}/q{q}/{steer}", json.dumps(body).encode()))
    return requests


def signature(reply: dict) -> dict:
    """What must not change under load: the answer and how it was steered."""
    ext = reply["adaptvis_edge"]
    return {"text": reply["choices"][0]["message"]["content"], "finish_reason": reply["choices"][0]["finish_reason"],
            "prompt_tokens": reply["usage"]["prompt_tokens"], "completion_tokens": reply["usage"]["completion_tokens"],
            "steering": ext["steering"], "alpha": ext["alpha"]}


@dataclass
class Outcome:
    status: int | str          # the HTTP status, or the exception's name (ReadTimeout, ConnectError...)
    latency_s: float
    equal: bool | None         # a 200: its answer equals the serial one
    retry_after: str | None    # a 503: its Retry-After header
    cached: bool | None        # a 200: the image prefix came from the server's cache (vision took 0 s)


async def send(client: httpx.AsyncClient, request: Request, references: dict | None):
    """One request; errors become an Outcome, never an exception.  Returns (Outcome, reply JSON or None)."""
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", content=request.body,
                              headers={"content-type": "application/json"})
        reply = r.json() if r.status_code == 200 else None
        status = r.status_code
    except httpx.HTTPError as e:
        return Outcome(type(e).__name__, time.perf_counter() - t0, None, None, None), None
    except ValueError:                                              # a 200 whose body is not JSON
        return Outcome("bad JSON", time.perf_counter() - t0, None, None, None), None
    latency = time.perf_counter() - t0
    if reply is None:
        return Outcome(status, latency, None, r.headers.get("retry-after"), None), r.text
    try:
        equal = None if references is None else signature(reply) == references[request.name]
        cached = reply["adaptvis_edge"]["timings"]["vision"] == 0.0
    except (KeyError, IndexError, TypeError):                      # a 200 without OpenAI's shape
        return Outcome("bad reply", latency, None, None, None), reply
    return Outcome(status, latency, equal, None, cached), reply


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _cores(seconds: float | None, wall: float) -> float | None:
    return None if seconds is None or wall <= 0 else round(seconds / wall, 2)


async def load(server: Server, requests: list[Request], references: dict, clients: int, seconds: float,
               timeout_s: float, label: str, console: Console) -> dict:
    """``clients`` clients, each sending one request after another (round-robin over ``requests``) until
    ``seconds`` have passed; a 503 makes its client wait Retry-After first.  Returns the phase's summary."""
    outcomes: list[Outcome] = []
    rss: list[tuple[float, int]] = []
    turn = itertools.count()
    start = time.perf_counter()
    deadline = start + seconds
    cpu0 = (_own_cpu_s(), server.cpu_s(), quiet.machine_busy_s())
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))

    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        async def one_client():
            while time.perf_counter() < deadline:
                outcome, _ = await send(client, requests[next(turn) % len(requests)], references)
                outcomes.append(outcome)
                if outcome.status == 503:
                    wait = min(_seconds(outcome.retry_after), deadline - time.perf_counter())
                    if wait > 0:
                        await asyncio.sleep(wait)

        async def watch():
            next_line = start + PROGRESS_EVERY_S
            while True:
                now = time.perf_counter()
                value = server.rss_bytes()
                if value is not None:
                    rss.append((now - start, value))
                if now >= next_line:
                    next_line += PROGRESS_EVERY_S
                    console.print(_progress_line(label, now - start, seconds, outcomes, value), markup=False,
                                  highlight=False)
                await asyncio.sleep(RSS_EVERY_S)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(one_client() for _ in range(clients)))
        finally:
            watcher.cancel()
    wall = time.perf_counter() - start                # until the last answer came back
    value = server.rss_bytes()
    if value is not None:
        rss.append((wall, value))
    own, served, busy = _own_cpu_s() - cpu0[0], server.cpu_s(), quiet.machine_busy_s()
    served = None if served is None or cpu0[1] is None else served - cpu0[1]
    others = None if busy is None or cpu0[2] is None or served is None else max(0.0, busy - cpu0[2] - own - served)
    summary = summarise(outcomes, wall)
    summary.update(clients=clients, seconds=seconds, rss=rss_summary(rss, seconds),
                   cpu_cores={"load_generator": _cores(own, wall), "server": _cores(served, wall),
                              "other_processes": _cores(others, wall), "machine": os.cpu_count()})
    return summary


def _seconds(retry_after: str | None) -> float:
    try:
        return max(0.0, float(retry_after))
    except (TypeError, ValueError):
        return 1.0


def _progress_line(label: str, elapsed: float, seconds: float, outcomes: list[Outcome], rss: int | None) -> str:
    statuses = Counter(o.status for o in outcomes)
    ok = [o.latency_s for o in outcomes if o.status == 200]
    p50 = f"{np.percentile(ok, 50) * 1000:.0f} ms" if ok else "-"
    other = len(outcomes) - statuses[200] - statuses[503]
    mismatched = sum(o.equal is False for o in outcomes)
    memory = f"{rss / 2**20:.0f} MiB" if rss else "?"
    return (f"  [{label} {elapsed:4.0f}/{seconds:.0f} s] {len(outcomes)} answered: {statuses[200]} ok, "
            f"{statuses[503]} 503, {other} other, {mismatched} mismatched; p50 {p50}, "
            f"{statuses[200] / max(elapsed, 1e-9):.1f} ok/s; server RSS {memory}")


# -- summaries and verdicts --------------------------------------------------------------------

def latency(values: list[float]) -> dict:
    """Seconds: p50, p95, max, mean, n (None when there are none)."""
    if not values:
        return {"p50": None, "p95": None, "max": None, "mean": None, "n": 0}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "max": max(values), "mean": sum(values) / len(values),
            "n": len(values)}


def summarise(outcomes: list[Outcome], wall_s: float) -> dict:
    statuses = Counter(str(o.status) for o in outcomes)
    ok = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    return {"requests": len(outcomes), "ok": len(ok), "failed": len(outcomes) - len(ok),
            "refused_503": len(refused), "other": len(outcomes) - len(ok) - len(refused),
            "status_counts": dict(sorted(statuses.items())),
            "mismatched": sum(o.equal is False for o in ok),
            "refused_without_retry_after": sum(not o.retry_after for o in refused),
            "latency_s": latency([o.latency_s for o in outcomes]),
            "latency_ok_s": latency([o.latency_s for o in ok]),
            "latency_503_s": latency([o.latency_s for o in refused]),
            "throughput_ok_per_s": len(ok) / wall_s if wall_s > 0 else None,
            "image_cache_hits": sum(bool(o.cached) for o in ok), "wall_s": wall_s}


def rss_summary(samples: list[tuple[float, int]], seconds: float) -> dict:
    """Start, max, end, and the growth from the middle of the phase to its end (the 'flat' rule)."""
    if not samples:
        return {"start_bytes": None, "max_bytes": None, "end_bytes": None, "middle_bytes": None,
                "second_half_growth": None, "samples": []}
    second_half = [b for t, b in samples if t >= seconds / 2] or [samples[-1][1]]
    middle, end = second_half[0], samples[-1][1]
    return {"start_bytes": samples[0][1], "max_bytes": max(b for _, b in samples), "end_bytes": end,
            "middle_bytes": middle, "second_half_growth": (end - middle) / middle,
            "every_s": RSS_EVERY_S, "samples": [[round(t, 2), b] for t, b in samples]}


def verdicts(phase1: dict, phase2: dict, after: dict) -> dict:
    """name -> {"ok", "rule", "value"}."""
    growth = phase1["rss"]["second_half_growth"]

    def v(ok, rule, value):
        return {"ok": bool(ok), "rule": rule, "value": value}
    return {
        "phase1_no_failures": v(phase1["failed"] == 0 and phase1["ok"] > 0,
                                "phase 1: every request answered 200 (and at least one)", phase1["status_counts"]),
        "phase1_answers_equal": v(phase1["mismatched"] == 0, "phase 1: 0 answers differ from the serial ones",
                                  phase1["mismatched"]),
        "phase1_memory_flat": v(growth is not None and growth <= FLAT_RSS,
                                f"phase 1: server RSS at the end at most {FLAT_RSS:.0%} above RSS at the middle",
                                None if growth is None else round(growth, 4)),
        "phase2_refuses": v(phase2["refused_503"] > 0, "phase 2: some requests refused with 503",
                            phase2["refused_503"]),
        "phase2_retry_after": v(phase2["refused_without_retry_after"] == 0, "phase 2: every 503 has Retry-After",
                                phase2["refused_without_retry_after"]),
        "phase2_no_other_errors": v(phase2["other"] == 0, "phase 2: no status besides 200 and 503, no "
                                    "connection errors or timeouts", phase2["status_counts"]),
        "phase2_answers_equal": v(phase2["mismatched"] == 0 and phase2["ok"] > 0,
                                  "phase 2: 0 of the 200s differ from the serial answers (and some 200s)",
                                  phase2["mismatched"]),
        "healthy_after": v(after["drained"] and after["equal"] == after["checked"],
                           "after phase 2: /health shows nothing held, and serial answers still equal",
                           {k: after[k] for k in ("drained", "checked", "equal")}),
    }


# -- the run -----------------------------------------------------------------------------------

async def _serial(server: Server, requests: list[Request], timeout_s: float, console: Console) -> tuple[dict, dict]:
    """Each request once, one at a time: {name: signature}, and the latency summary."""
    references, times = {}, []
    start = next_line = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout_s) as client:
        for done, request in enumerate(requests):
            if time.perf_counter() >= next_line + PROGRESS_EVERY_S:
                next_line = time.perf_counter()
                console.print(f"  [serial {next_line - start:4.0f} s] {done} of {len(requests)} answered",
                              markup=False, highlight=False)
            outcome, reply = await send(client, request, None)
            if outcome.status != 200:
                raise LoadTestError(f"the serial answer to {request.name} failed: {outcome.status} "
                                    f"{str(reply)[:300]}")
            references[request.name] = signature(reply)
            times.append(outcome.latency_s)
    return references, latency(times)


async def _after(server: Server, requests: list[Request], references: dict, timeout_s: float) -> dict:
    """Wait until the server holds nothing, then one request per steering, serially: still equal?"""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout_s) as client:
        while True:
            try:
                health = (await client.get("/health")).json()
            except (httpx.HTTPError, ValueError):
                health = {}
            drained = health.get("running") == 0 and health.get("waiting") == 0
            if drained or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        checks = [r for r in requests if r.name.startswith("scene0/q0/")]
        outcomes = [(await send(client, r, references))[0] for r in checks]
    return {"drained": drained, "health": health, "checked": len(checks),
            "equal": sum(o.status == 200 and bool(o.equal) for o in outcomes),
            "statuses": [str(o.status) for o in outcomes]}


async def _measure(test: LoadTest, server: Server, console: Console) -> dict:
    requests = workload(server.model, test.max_tokens)
    console.print(f"serial: {len(requests)} requests ({IMAGES} scenes x {len(QUESTIONS)} questions x "
                  f"{len(STEERINGS)} steerings: {', '.join(STEERINGS)}), one at a time", highlight=False)
    references, serial_latency = await _serial(server, requests, test.request_timeout_s, console)
    console.print(f"phase 1: {test.clients} clients for {test.seconds:g} s (capacity {test.capacity})",
                  highlight=False)
    phase1 = await load(server, requests, references, test.clients, test.seconds, test.request_timeout_s,
                        "phase 1", console)
    console.print(f"phase 2: {test.overload_clients} clients for {test.overload_seconds:g} s "
                  f"(capacity {test.capacity}: the rest get 503)", highlight=False)
    phase2 = await load(server, requests, references, test.overload_clients, test.overload_seconds,
                        test.request_timeout_s, "phase 2", console)
    after = await _after(server, requests, references, test.request_timeout_s)
    return {"requests": [r.name for r in requests], "serial": {"latency_s": serial_latency},
            "phase1": phase1, "phase2": phase2, "after": after}


def run(test: LoadTest, console: Console | None = None, out: Path | None = None) -> dict:
    """The whole load test; returns the result (``result["passed"]``: every verdict holds) and writes it
    to ``out`` when given.  Raises LoadTestError when it could not run, ValueError for bad numbers."""
    console = console or Console()
    test.check()
    started = dt.datetime.now(dt.timezone.utc)
    info = machine.describe()
    bundle = Path(test.bundle) if test.bundle is not None else tiny_bundle(log=console.print)
    console.print(f"[bold]loadtest[/] {bundle} on {info['cpu_model']}: the server and these clients share the "
                  f"machine's {info['logical_cpus']} CPUs", highlight=False)
    with Server(bundle, test.max_concurrent, test.max_queue) as server:
        console.print(f"server: pid {server.proc.pid}, {server.url}, model {server.model!r}, "
                      f"{test.max_concurrent} at once + {test.max_queue} queued", highlight=False)
        measured = asyncio.run(_measure(test, server, console))
        server_errors = server.log_errors()
    result = {"started_utc": started.isoformat(timespec="seconds"),
              "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "bundle": str(bundle), "test": {**asdict(test), "bundle": str(bundle), "capacity": test.capacity},
              "machine": info, "versions": machine.versions(),
              "note": f"the server and the load generator ran on the same {info['logical_cpus']} CPUs",
              **measured, "server_log_errors": server_errors[:50]}
    result["verdicts"] = verdicts(result["phase1"], result["phase2"], result["after"])
    result["passed"] = all(v["ok"] for v in result["verdicts"].values())
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    report(result, console)
    if out is not None:
        console.print(f"results written to [bold]{out}[/]")
    return result


# -- the command line ---------------------------------------------------------------------------

def parse(argv=None) -> tuple[LoadTest, Path | None]:
    d = LoadTest()
    p = argparse.ArgumentParser(prog="python -m bench.loadtest", description="Load-test `python -m serve` on "
                                "127.0.0.1 (it starts its own server): N clients below the queue bound, then "
                                "more than it holds.")
    p.add_argument("--bundle", type=Path, help="bundle folder (default: the tiny random bundle, built once into "
                                               f"{TINY.relative_to(ROOT)}/bundle)")
    p.add_argument("--clients", type=int, default=d.clients, help=f"phase 1 clients (default {d.clients})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"phase 1 length (default {d.seconds:g})")
    p.add_argument("--overload-clients", type=int, default=d.overload_clients,
                   help=f"phase 2 clients (default {d.overload_clients})")
    p.add_argument("--overload-seconds", type=float, default=d.overload_seconds,
                   help=f"phase 2 length (default {d.overload_seconds:g})")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help=f"the server's answers at once (default {d.max_concurrent})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"the server's queue; beyond it, 503 (default {d.max_queue})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"per answer (default {d.max_tokens})")
    p.add_argument("--out", type=Path, help="result file (default bench/results/loadtest-<machine>-<date>.json)")
    args = p.parse_args(argv)
    test = LoadTest(bundle=args.bundle, clients=args.clients, seconds=args.seconds,
                    overload_clients=args.overload_clients, overload_seconds=args.overload_seconds,
                    max_concurrent=args.max_concurrent, max_queue=args.max_queue, max_tokens=args.max_tokens)
    try:
        test.check()
    except ValueError as e:
        p.error(str(e))
    if args.bundle is not None and not args.bundle.is_dir():
        p.error(f"--bundle {args.bundle} is not a folder")
    return test, args.out


def main(argv=None) -> int:
    test, out = parse(argv)
    today = dt.datetime.now(dt.timezone.utc)
    out = out or RESULTS / f"loadtest-{machine.slug(machine.describe())}-{today:%Y-%m-%d}.json"
    console = Console() if sys.stdout.isatty() else Console(width=150)
    signal.signal(signal.SIGTERM, signal.default_int_handler)     # SIGTERM unwinds (and stops the server) as Ctrl-C
    try:
        result = run(test, console, out)
    except LoadTestError as e:
        console.print(f"[red]the load test could not run: {e}[/]")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the server was stopped[/]")
        return 130
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
