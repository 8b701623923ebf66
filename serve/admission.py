"""Bounded concurrency: answers run on ``max_concurrent`` worker threads, ``max_queue`` more wait,
and one more is refused at once with 503 + Retry-After (never a timeout, never a collapse).

    request --admit()--> [ waiting (<= max_queue) ] --slot--> [ running (<= max_concurrent) ] --> done
              full? -> Overloaded (503)

A slot is given back when the worker thread finishes, not when the client goes away: a client
that disconnects mid-answer cannot make the server start more answers than it has threads for.
"""
from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from .errors import overloaded

T = TypeVar("T")


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int):
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.running = 0
        self.waiting = 0
        self.refused = 0
        self._slots = asyncio.Semaphore(max_concurrent)
        self._seconds: deque[float] = deque(maxlen=64)         # recent service times, for Retry-After
        self.executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="answer")

    @property
    def held(self) -> int:
        return self.running + self.waiting

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the median answer time times the queue's depth in rounds."""
        typical = statistics.median(self._seconds) if self._seconds else 1.0
        rounds = math.ceil((self.held + 1) / self.max_concurrent)
        return max(1, min(60, math.ceil(typical * rounds)))

    def refuse_if_full(self) -> None:
        """Raise 503 now if a request would be refused: called before parsing, so refusals stay cheap
        under a flood (the check in ``_enter`` still decides)."""
        if self.held >= self.max_concurrent + self.max_queue:
            self.refused += 1
            raise overloaded(self.retry_after(), self.held)

    async def _enter(self) -> None:
        self.refuse_if_full()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def _leave(self, started: float) -> None:
        self.running -= 1
        self._seconds.append(time.perf_counter() - started)
        self._slots.release()

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on a worker thread once admitted; raises APIError(503) when full."""
        await self._enter()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            future = loop.run_in_executor(self.executor, work)
        except BaseException:
            self._leave(started)
            raise
        future.add_done_callback(lambda _: self._leave(started))
        return await asyncio.shield(future)        # the client leaving does not free the slot early

    async def start(self, produce: Callable[[Callable, threading.Event], None]) -> tuple[asyncio.Queue, threading.Event]:
        """Run ``produce(push, stop)`` on a worker thread once admitted; it pushes items that arrive on the
        returned queue (from the event loop's side); set ``stop`` to make it end at its next item."""
        await self._enter()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def push(item) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)
        try:
            future = loop.run_in_executor(self.executor, produce, push, stop)
        except BaseException:
            self._leave(started)
            raise
        future.add_done_callback(lambda _: self._leave(started))
        return items, stop

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
