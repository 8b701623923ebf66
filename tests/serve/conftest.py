"""A real server (uvicorn on 127.0.0.1, a free port) over the tiny bundle, in a background thread."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from PIL import Image

import runtime
from tests.conftest import random_image

MODEL = "tiny-llava"
QUESTION = "Where is the mug in relation to the plate?"


@contextmanager
def running_server(settings, vlm=None):
    """Yields the base URL (http://127.0.0.1:PORT) of create_app(settings) served by uvicorn."""
    import uvicorn

    from serve import create_app
    from serve.protocol import uvicorn_options
    app = create_app(settings, vlm)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def png_bytes(seed: int, height: int = 40, width: int = 50) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(random_image(seed, height, width)).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def user_message(question: str, url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="package")
def tiny_vlm(bundle_dir):
    return runtime.load(bundle_dir("tiny"))
