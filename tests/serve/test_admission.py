"""Bounded concurrency: max_concurrent run, max_queue wait, one more gets 503 + Retry-After at once;
a slot is freed when its thread finishes, never earlier (a client leaving does not free it)."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from serve import ServeSettings
from serve.admission import Admission
from serve.errors import APIError
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, running_server, user_message


async def _until(condition, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_full_means_503_with_retry_after():
    async def scenario():
        admission = Admission(max_concurrent=1, max_queue=1)
        gate = threading.Event()
        first = asyncio.create_task(admission.run(lambda: gate.wait(10)))
        await _until(lambda: admission.running == 1)
        second = asyncio.create_task(admission.run(lambda: "second"))
        await _until(lambda: admission.waiting == 1)
        with pytest.raises(APIError) as refused:
            await admission.run(lambda: "third")
        assert refused.value.status == 503 and refused.value.code == "queue_full"
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        assert admission.refused == 1 and admission.held == 2          # the refusal held nothing
        gate.set()
        assert await first is True and await second == "second"
        await _until(lambda: admission.held == 0)
        assert await admission.run(lambda: "again") == "again"          # and it recovers
        admission.shutdown()
    asyncio.run(scenario())


def test_a_cancelled_request_holds_its_slot_until_its_thread_ends():
    async def scenario():
        admission = Admission(max_concurrent=1, max_queue=0)
        gate = threading.Event()
        task = asyncio.create_task(admission.run(lambda: gate.wait(10)))
        await _until(lambda: admission.running == 1)
        task.cancel()                                   # the client went away
        await asyncio.sleep(0.05)
        assert admission.running == 1                   # its thread still computes
        with pytest.raises(APIError):
            await admission.run(lambda: None)
        gate.set()
        await _until(lambda: admission.running == 0)
        assert await admission.run(lambda: 7) == 7
        admission.shutdown()
    asyncio.run(scenario())


def test_a_waiting_request_that_leaves_frees_its_place():
    async def scenario():
        admission = Admission(max_concurrent=1, max_queue=1)
        gate = threading.Event()
        running = asyncio.create_task(admission.run(lambda: gate.wait(10)))
        await _until(lambda: admission.running == 1)
        waiting = asyncio.create_task(admission.run(lambda: "never"))
        await _until(lambda: admission.waiting == 1)
        waiting.cancel()
        await _until(lambda: admission.waiting == 0)
        gate.set()
        await running
        await _until(lambda: admission.held == 0)
        admission.shutdown()
    asyncio.run(scenario())


def test_a_client_leaving_a_stream_frees_the_server(bundle_dir, tiny_vlm):
    image = png_bytes(11)
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL, max_concurrent=1, max_queue=0)
    body = {"model": MODEL, "messages": user_message(QUESTION, data_url(image)), "max_tokens": 200,
            "stream": True, "steering": "none"}
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as events:
            assert events.status_code == 200
            next(events.iter_lines())                    # the first event, then hang up
        deadline = time.monotonic() + 10
        while c.get("/health").json()["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 5})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == tiny_vlm.answer(image, QUESTION, steering=None,
                                                                               max_new_tokens=5).text
