"""The Ray Serve fleet (serve/fleet.py, serve/fleet.yaml): a local Ray, two replicas of the tiny bundle
behind Ray's HTTP proxy, answered through OpenAI's client; the config file validates with Ray's schema."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from serve.settings import SettingsError
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, user_message

ray = pytest.importorskip("ray", reason="the `fleet` extra (ray[serve]) is not installed")

from ray import serve as ray_serve  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from serve.fleet import DEPLOYMENT, KNOWN_ARGS, build, deployment_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KEY = "fleet-key-0123456789"
APP = "fleet"
IMAGES = [png_bytes(5), png_bytes(6, 64, 48)]
# Ray 2.60 turns token auth on for a new local cluster (RAY_AUTH_MODE unset) and writes ~/.ray/auth_token
# unless it finds a token: give it one, in the environment only.  (RAY_AUTH_MODE itself is read when ray is
# imported: setting it here would not be seen.)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


# -- the config file and the builder's args: no Ray instance needed ----------------------------

def test_the_config_file_validates_with_rays_schema():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "fleet.yaml").read_text()))
    assert (config.http_options.host, config.http_options.port) == ("127.0.0.1", 8000)
    [app] = config.applications
    assert app.import_path == "serve.fleet:build" and app.route_prefix == "/"
    assert app.args["bundle"] == "bundles/spatial" and app.args["num_replicas"] == 2
    settings, options = deployment_options(app.args)           # every arg in the file is one build() takes
    assert settings.bundle == "bundles/spatial" and settings.served_name == "spatial"
    assert options["num_replicas"] == 2 and options["max_ongoing_requests"] == settings.capacity


@pytest.mark.parametrize("args, message", [
    ({"bundle": "b", "replicas": 2}, "unknown arg 'replicas'; known: bundle, api_key"),
    ({"bundle": "b", "port": 9000}, "http_options"),
    ({"bundle": "b", "host": "0.0.0.0"}, "http_options"),
    ({"bundle": "b", "header_timeout_s": 5}, "'header_timeout_s' cannot be honoured by the Ray Serve app"),
    ({"bundle": "b", "body_timeout_s": 5}, "'body_timeout_s' cannot be honoured by the Ray Serve app"),
    ({"bundle": "b", "keep_alive_s": 5}, "'keep_alive_s' cannot be honoured by the Ray Serve app"),
    ({"bundle": "b", "max_connections": 64}, "request_timeout_s, keep_alive_timeout_s"),
    ({"num_replicas": 2}, "'bundle' is required"),
    ({"bundle": "b", "num_replicas": 0}, "num_replicas must be an int >= 1"),
    ({"bundle": "b", "num_gpus": -1}, "num_gpus (per replica) must be a number >= 0"),
    ({"bundle": "b", "max_concurrent": 0}, "max_concurrent must be an int >= 1"),      # ServeSettings' own checks
    ({"bundle": "b", "api_key": "short"}, "api_key must be a string of at least 8"),
    ({"bundle": "b", "max_queued_requests": 0}, "max_queued_requests (or -1: no limit) must be an int >= 1"),
    ({"bundle": "b", "threads": "4"}, "threads must be an int >= 1"),                   # what YAML can carry
    ({"bundle": "b", "providers": [1]}, "providers must be a name or a list of names"),
])
def test_build_rejects_bad_args(args, message):
    with pytest.raises(SettingsError) as e:
        build(args)
    assert message in str(e.value)


def test_every_known_arg_is_named_in_the_error():
    with pytest.raises(SettingsError) as e:
        build({"bundle": "b", "bogus": 1})
    assert all(k in str(e.value) for k in KNOWN_ARGS)


# -- a local Ray with two replicas ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(bundle_dir):
    """Yields the base URL of Ray's proxy in front of two replicas of the tiny bundle; stops Serve and Ray after."""
    bundle = str(bundle_dir("tiny"))                   # exported before Ray starts (not timed with it)
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "RAY_AUTH_MODE")}     # ray.init sets RAY_AUTH_MODE
    os.environ.update(RAY_ENV)
    temp = tempfile.mkdtemp(prefix="ray-")             # this test's own Ray session folder
    port = _free_port()
    try:
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                 _temp_dir=temp, configure_logging=False, log_to_driver=False)
        ray_up = time.perf_counter()
        ray_serve.start(http_options={"host": "127.0.0.1", "port": port})
        ray_serve.run(build({"bundle": bundle, "model_name": MODEL, "api_key": KEY, "num_replicas": 2,
                             "num_cpus": 0.5, "max_concurrent": 1, "max_queue": 8}),
                      name=APP, route_prefix="/")
        done = time.perf_counter()
        print(f"\nray.init {ray_up - started:.1f} s, serve.start + run (2 replicas) {done - ray_up:.1f} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            if ray.is_initialized():
                ray_serve.shutdown()
        finally:
            ray.shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def client(fleet):
    return openai.OpenAI(base_url=f"{fleet}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_two_replicas_are_running(fleet):
    deployment = ray_serve.status().applications[APP].deployments[DEPLOYMENT]
    assert deployment.replica_states == {"RUNNING": 2}


@pytest.mark.parametrize("which", [0, 1])
def test_answers_through_ray_equal_the_runtime(client, tiny_vlm, which):
    reply = client.chat.completions.create(model=MODEL, messages=user_message(QUESTION, data_url(IMAGES[which])),
                                           max_tokens=8)
    expected = tiny_vlm.answer(IMAGES[which], QUESTION, max_new_tokens=8)
    choice = reply.choices[0]
    assert choice.message.content == expected.text
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert choice.finish_reason == ("length" if len(expected.token_ids) == 8 else "stop")
    assert reply.model == MODEL
    assert reply.model_extra["adaptvis_edge"]["steering"] == expected.steering


def test_both_replicas_answer(fleet, tiny_vlm):
    expected = tiny_vlm.answer(IMAGES[0], QUESTION, max_new_tokens=3).text
    body = {"model": MODEL, "messages": user_message(QUESTION, data_url(IMAGES[0])), "max_tokens": 3}
    seen: set[str] = set()
    with httpx.Client(base_url=fleet, headers={"authorization": f"Bearer {KEY}"}, timeout=60) as c, \
            ThreadPoolExecutor(4) as pool:
        for _ in range(8):                             # at most 32 requests, 4 at a time
            for r in pool.map(lambda _: c.post("/v1/chat/completions", json=body), range(4)):
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == expected
                seen.add(r.headers["x-replica"])
            if len(seen) == 2:
                break
    assert len(seen) == 2, f"only {seen} answered"


def test_the_api_key_is_enforced_through_ray(fleet):
    body = {"model": MODEL, "messages": user_message(QUESTION, data_url(IMAGES[0])), "max_tokens": 2}
    for headers in ({}, {"authorization": "Bearer wrong-key-0123456789"}):
        r = httpx.post(f"{fleet}/v1/chat/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{fleet}/v1/models", headers=headers, timeout=60).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{fleet}/v1", api_key="not-the-key", max_retries=0).models.list()
    models = httpx.get(f"{fleet}/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=60).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
