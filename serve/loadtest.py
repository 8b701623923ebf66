"""python -m serve.loadtest [--bundle DIR] [--clients 16] [--seconds 60] [--overload-clients 64] [...]

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

The requests: 8 drawn scenes (calibration.synthetic, 336 px PNG data URLs) x 2 questions x 3
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
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from bench import machine, quiet

from .settings import LOCALHOST, ServeSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TINY = ROOT / "build" / "loadtest" / "tiny"           # the default bundle: random tiny weights, built once

IMAGES, IMAGE_SIZE = 8, 336
QUESTIONS = ("Where is the {a} in relation to the {b}?", "Is the {a} to the left of the {b}?")
STEERINGS = {"default": None,                                   # no field: the bundle's calibrated AdaptVis
             "none": {"method": "none"},
             "scalingvis-1.5": {"method": "scalingvis", "alpha": 1.5}}

RSS_EVERY_S = 0.5
FLAT_RSS = 0.10           # phase 1: RSS at the end is at most 10% above RSS at the middle of the phase
START_TIMEOUT_S = 120     # the server loads its bundle and answers GET /health within this
DRAIN_TIMEOUT_S = 30      # after phase 2, /health shows nothing running or waiting within this
PROGRESS_EVERY_S = 5.0


class LoadTestError(RuntimeError):
    """The test could not run (the server did not start, a serial answer failed): no verdict."""


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
    from graphs.manifest import MANIFEST_FILE

    checkpoint, bundle = TINY / "checkpoint", TINY / "bundle"
    if (bundle / MANIFEST_FILE).is_file():
        return bundle
    from export import export_llava
    from export.fixtures import build_checkpoint

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
    from calibration import synthetic

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


# -- the server ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this process dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """``python -m serve BUNDLE`` on 127.0.0.1 and a free port, as a child process.

    ``with Server(...) as server:`` waits for GET /health, and stops the process on the way out,
    whatever happened; its output goes to a temporary file (read back by ``log_tail``)."""

    def __init__(self, bundle: Path, max_concurrent: int, max_queue: int):
        self.bundle, self.max_concurrent, self.max_queue = Path(bundle), max_concurrent, max_queue
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.port = _free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        command = [sys.executable, "-m", "serve", str(self.bundle), "--host", LOCALHOST, "--port", str(self.port),
                   "--max-concurrent", str(self.max_concurrent), "--max-queue", str(self.max_queue),
                   "--log-level", "warning"]           # info would log every request
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self.model = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise LoadTestError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return client.get("/v1/models").json()["data"][0]["id"]
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise LoadTestError(f"the server did not answer /health within {START_TIMEOUT_S} s:\n"
                                        f"{self.log_tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()                          # uvicorn: a graceful shutdown
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def rss_bytes(self) -> int | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the server process (all its threads) so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]

    def log_errors(self) -> list[str]:
        """Lines of the server's output that report an error (its log level is warning)."""
        self.log.flush()
        self.log.seek(0)
        return [line.rstrip() for line in self.log if line.startswith(("ERROR", "CRITICAL", "Traceback"))]


# -- the clients --------------------------------------------------------------------------------

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


# -- the report --------------------------------------------------------------------------------

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


# -- the command line ---------------------------------------------------------------------------

def parse(argv=None) -> tuple[LoadTest, Path | None]:
    d = LoadTest()
    p = argparse.ArgumentParser(prog="python -m serve.loadtest", description="Load-test `python -m serve` on "
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
    p.add_argument("--out", type=Path, help="result file (default serve/results/loadtest-<machine>-<date>.json)")
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
