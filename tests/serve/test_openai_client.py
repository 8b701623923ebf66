"""The server driven by OpenAI's own Python client: plain, streaming, the steering extension, the API key.
Every answer is compared with runtime.answer() on the same bundle (a separately loaded VLM)."""
from __future__ import annotations

import math

import httpx
import openai
import pytest

import runtime
from runtime.__main__ import answer_warning
from serve import ServeSettings
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, running_server, user_message

KEY = "test-key-0123456789"
IMAGES = [png_bytes(1), png_bytes(2, 64, 48)]


@pytest.fixture(scope="module")
def client(bundle_dir):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), api_key=KEY, model_name=MODEL)
    with running_server(settings) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


def _ask(client, image: bytes, question: str = QUESTION, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=user_message(question, data_url(image)), **kwargs)


def _same(ext: dict, expected: runtime.Answer):
    assert ext["steering"] == expected.steering
    assert ext["warning"] == answer_warning(QUESTION, expected.text)
    assert ext["alpha"] == expected.to_dict()["alpha"]
    if expected.confidence is None:
        assert ext["confidence"] is None
    else:
        assert math.isclose(ext["confidence"], expected.confidence, rel_tol=1e-6)


def test_the_reply_warns_when_the_answer_is_none_of_the_listed_options(client, tiny_vlm):
    question = QUESTION + " Answer with left, right, on or under."
    reply = _ask(client, IMAGES[0], question=question, max_tokens=4)
    expected = tiny_vlm.answer(IMAGES[0], question, max_new_tokens=4)
    assert reply.choices[0].message.content == expected.text               # random weights: no relation word
    assert "is none of the options the question lists (left, right, on, under)" in \
        reply.model_extra["adaptvis_edge"]["warning"]


@pytest.mark.parametrize("which", [0, 1])
def test_plain_answer_equals_the_runtime(client, tiny_vlm, which):
    reply = _ask(client, IMAGES[which], max_tokens=8)
    expected = tiny_vlm.answer(IMAGES[which], QUESTION, max_new_tokens=8)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert choice.finish_reason == ("length" if len(expected.token_ids) == 8 else "stop")
    assert reply.model == MODEL and reply.object == "chat.completion"
    _same(reply.model_extra["adaptvis_edge"], expected)


def test_streaming_joins_into_the_runtime_answer(client, tiny_vlm):
    stream = _ask(client, IMAGES[0], max_tokens=10, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    expected = tiny_vlm.answer(IMAGES[0], QUESTION, max_new_tokens=10)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text and len(expected.token_ids) > 1
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1     # piece by piece
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    _same(finals[0].model_extra["adaptvis_edge"], expected)
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)


@pytest.mark.parametrize("steering, expected_steering", [
    ({"method": "none"}, None),
    ("none", None),
    ({"method": "scalingvis", "alpha": 2.0}, runtime.ScalingVis(2.0)),
    ({"method": "scalingvis", "alpha": 0.25, "apply_to": "after_image"}, runtime.ScalingVis(0.25, "after_image")),
    ({"method": "adaptvis", "low": 0.3, "high": 3.0, "threshold": 0.99}, runtime.AdaptVis(0.3, 3.0, 0.99)),
    ({"method": "adaptvis", "low": 0.3, "high": 3.0, "threshold": 0.0}, runtime.AdaptVis(0.3, 3.0, 0.0)),
])
def test_the_steering_extension(client, tiny_vlm, steering, expected_steering):
    reply = _ask(client, IMAGES[1], max_tokens=6, extra_body={"steering": steering})
    expected = tiny_vlm.answer(IMAGES[1], QUESTION, steering=expected_steering, max_new_tokens=6)
    assert reply.choices[0].message.content == expected.text
    _same(reply.model_extra["adaptvis_edge"], expected)


def test_adaptvis_parameters_reach_the_model(client):
    """threshold 1.0: every confidence is below it, so alpha = low; 0.0: alpha = high."""
    low = _ask(client, IMAGES[0], max_tokens=1, extra_body={"steering": {"method": "adaptvis", "low": 0.3,
                                                                            "threshold": 1.0}})
    high = _ask(client, IMAGES[0], max_tokens=1, extra_body={"steering": {"method": "adaptvis", "high": 3.0,
                                                                             "threshold": 0.0}})
    assert low.model_extra["adaptvis_edge"]["alpha"] == 0.3 and high.model_extra["adaptvis_edge"]["alpha"] == 3.0


def test_image_influence_and_attention(client, tiny_vlm):
    reply = _ask(client, IMAGES[0], max_tokens=4, extra_body={"image_influence": True, "return_attention": True})
    expected = tiny_vlm.answer(IMAGES[0], QUESTION, max_new_tokens=4, measure_image_influence=True,
                               return_attention=True)
    ext = reply.model_extra["adaptvis_edge"]
    assert math.isclose(ext["image_influence"]["tv_distance"], expected.image_influence.tv_distance, rel_tol=1e-5)
    assert ext["image_influence"]["answer_changed"] == expected.image_influence.answer_changed
    assert set(ext["attention"]) == set(expected.attention)
    for which, maps in expected.attention.items():
        got = ext["attention"][which]
        assert len(got["maps"]) == maps.maps.shape[0] and got["box"] == list(maps.box)


def test_a_second_question_about_one_frame_reuses_the_image(client):
    image = png_bytes(7)
    first = _ask(client, image, max_tokens=2).model_extra["adaptvis_edge"]["timings"]
    second = _ask(client, image, "Is the mug left of the plate?", max_tokens=2).model_extra["adaptvis_edge"]["timings"]
    assert first["vision"] > 0 and second["vision"] == 0.0           # the runtime's image cache


def test_models_list_and_health(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    root = str(client.base_url).rstrip("/").removesuffix("/v1")
    health = httpx.get(f"{root}/health", headers={"authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert health == {"status": "ok", "model": MODEL, "running": 0, "waiting": 0, "capacity": 34, "refused": 0}


def test_the_api_key_is_required(client):
    wrong = openai.OpenAI(base_url=str(client.base_url), api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=user_message(QUESTION, data_url(IMAGES[0])))
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_bad_request_is_an_openai_error(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=user_message(QUESTION, "data:image/png;base64,@@@"))
    assert caught.value.code == "invalid_base64"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=user_message(QUESTION, data_url(IMAGES[0])))
