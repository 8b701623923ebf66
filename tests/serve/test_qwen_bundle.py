"""`just serve` on a Qwen bundle: the OpenAI client's answers, plain and streamed, equal runtime.load()'s."""
from __future__ import annotations

import math

import openai
import pytest

import runtime
from serve import ServeSettings
from tests.serve.conftest import QUESTION, data_url, png_bytes, running_server, user_message

MODEL = "tiny-qwen"
KEY = "test-key-0123456789"
IMAGE = png_bytes(3, 70, 130)          # not square: a grid of its own


@pytest.fixture(scope="module", params=["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def served(request, qwen_bundle_dir):
    bundle = qwen_bundle_dir(request.param)
    settings = ServeSettings(bundle=str(bundle), api_key=KEY, model_name=MODEL)
    with running_server(settings) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60), runtime.load(bundle)


def _ask(client, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=user_message(QUESTION, data_url(IMAGE)), **kwargs)


def test_the_served_answer_equals_the_runtime(served):
    client, vlm = served
    reply = _ask(client, max_tokens=6)
    expected = vlm.answer(IMAGE, QUESTION, max_new_tokens=6)
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.completion_tokens == len(expected.token_ids)
    extra = reply.model_extra["adaptvis_edge"]
    assert extra["steering"] == expected.steering == "adaptvis"
    assert math.isclose(extra["confidence"], expected.confidence, rel_tol=1e-6)


def test_the_streamed_answer_joins_to_the_runtime_s(served):
    client, vlm = served
    pieces = [c.choices[0].delta.content or "" for c in _ask(client, max_tokens=6, stream=True) if c.choices]
    assert "".join(pieces) == vlm.answer(IMAGE, QUESTION, max_new_tokens=6).text
