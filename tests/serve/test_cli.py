"""`just serve`: a real process on a free port; a bad bundle or setting fails before anything listens."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from serve.settings import ServeSettings, SettingsError
from tests.serve.conftest import QUESTION, data_url, png_bytes, user_message
from tests.test_justfile import ROOT, _just


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(*args) -> list[str]:
    return [_just(), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT), "serve", *args]


def test_just_serve_answers_then_stops(bundle_dir, tiny_vlm):
    port, key = _free_port(), "cli-key-12345678"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.Popen(_serve(str(bundle_dir("tiny")), "--port", str(port), "--api-key", key,
                                   "--model-name", "tiny", "--log-level", "warning"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)       # its own process group: `just` does not pass SIGTERM on
    try:
        headers = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
            image = png_bytes(3)
            r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": user_message(QUESTION,
                                                                                                 data_url(image)),
                                                     "max_tokens": 5})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == tiny_vlm.answer(image, QUESTION,
                                                                                   max_new_tokens=5).text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/bundle"], "BundleError"),
    (["BUNDLE", "--max-concurrent", "0"], "max_concurrent must be"),
    (["BUNDLE", "--api-key", "short"], "api_key must be"),
    (["BUNDLE", "--provider", "tpu"], "unknown provider"),
    (["BUNDLE", "--image-folder", "/nonexistent/folder"], "is not a folder"),
    (["BUNDLE", "--header-timeout", "0"], "header_timeout_s must be"),
])
def test_bad_settings_fail_before_listening(bundle_dir, args, message):
    args = [str(bundle_dir("tiny")) if a == "BUNDLE" else a for a in args]
    out = subprocess.run([sys.executable, "-m", "serve", *args, "--port", str(_free_port())], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_settings_validate():
    for bad in [dict(port=70000), dict(max_queue=-1), dict(default_max_tokens=600), dict(max_body_bytes=True),
                dict(threads=0), dict(threads="4"), dict(model_name=""), dict(providers=[1]), dict(providers=[]),
                dict(header_timeout_s=0), dict(body_timeout_s=-1.0), dict(keep_alive_s=float("nan")),
                dict(header_timeout_s=True), dict(max_connections=0), dict(max_connections=2.5)]:
        with pytest.raises(SettingsError):
            ServeSettings(bundle=".", **bad)
    assert ServeSettings(bundle=".").host == "127.0.0.1"          # localhost unless told otherwise
    assert ServeSettings(bundle=".", api_key="k" * 12).to_dict()["api_key"] == "***"


def test_connection_flags_reach_the_settings_and_uvicorn():
    from serve.__main__ import parser, settings_from
    from serve.protocol import BoundedH11Protocol, uvicorn_options
    settings = settings_from(parser().parse_args([".", "--header-timeout", "2.5", "--body-timeout", "7",
                                                  "--keep-alive", "3", "--max-connections", "9"]))
    options = uvicorn_options(settings)
    assert options["timeout_keep_alive"] == 3 and issubclass(options["http"], BoundedH11Protocol)
    assert (options["http"].header_timeout_s, options["http"].body_timeout_s, options["http"].max_connections) \
        == (2.5, 7, 9)
    default = uvicorn_options(ServeSettings(bundle="."))["http"]
    assert (default.header_timeout_s, default.body_timeout_s, default.max_connections) == (10, 60, 128)
