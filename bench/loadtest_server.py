"""The load test's server: ``python -m serve BUNDLE`` as a child process on 127.0.0.1 and a free port,
always stopped on the way out (errors and Ctrl-C too; SIGTERM when the parent dies, on Linux)."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from serve.settings import LOCALHOST

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120     # the server loads its bundle and answers GET /health within this


class LoadTestError(RuntimeError):
    """The test could not run (the server did not start, a serial answer failed): no verdict."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this process dies, even by SIGKILL (Linux)."""
    try:
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
