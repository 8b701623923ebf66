"""Logits that come out NaN are a 400 in OpenAI's shape, streamed or not, never a 200 with empty content."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from serve import ServeSettings
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, running_server, user_message

IMAGE = png_bytes(5)


@pytest.fixture(scope="module")
def http(bundle_dir, tiny_vlm):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL)
    with running_server(settings, tiny_vlm) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _body(**changes) -> dict:
    return {"model": MODEL, "messages": user_message(QUESTION, data_url(IMAGE)), "max_tokens": 6, **changes}


def _nan_when_steered(monkeypatch, vlm):
    real = vlm.sessions.runner.step

    def step(embeds, cache, scale, image_mask, attention):
        logits, after, rows = real(embeds, cache, scale, image_mask, attention)
        return (np.full_like(logits, np.nan) if not np.all(scale == 1) else logits), after, rows
    monkeypatch.setattr(vlm.sessions.runner, "step", step)


@pytest.mark.parametrize("stream", [False, True])
def test_nan_logits_are_a_400_and_change_nothing(monkeypatch, http, tiny_vlm, stream):
    expected = tiny_vlm.answer(IMAGE, QUESTION, max_new_tokens=6).text
    _nan_when_steered(monkeypatch, tiny_vlm)
    r = http.post("/v1/chat/completions", json=_body(stream=stream, steering={"method": "scalingvis", "alpha": 1.5}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "non_finite_logits" and error["param"] == "steering"
    assert error["message"].startswith("NumericalError: the decoder's logits after the rescaled pass")
    unsteered = http.post("/v1/chat/completions", json=_body(stream=stream, steering="none"))
    assert unsteered.status_code == 200
    monkeypatch.undo()
    r = http.post("/v1/chat/completions", json=_body())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected
