"""Bad input over raw HTTP: each gets its status and an OpenAI-shaped error, and changes nothing —
the server answers the next good request exactly as before (equal to runtime.answer())."""
from __future__ import annotations

import socket
import struct
import zlib

import httpx
import pytest

from serve import ServeSettings
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, running_server, user_message

GOOD_IMAGE = png_bytes(5)
MAX_BODY = 2 * 1024 * 1024
KEY = "bad-input-key-42"


def _bomb(side: int = 5000) -> bytes:
    """A valid PNG of side x side 1-bit pixels (25 MP, above the 16 MP limit) in a few KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress((b"\x00" * (1 + (side + 7) // 8)) * side, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _nan_tiff() -> bytes:
    """A valid TIFF of float32 pixels, all NaN (PIL reads it as mode F)."""
    import io

    import numpy as np
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30), np.nan, np.float32)).save(buf, "TIFF")
    return buf.getvalue()


def _body(**changes) -> dict:
    body = {"model": MODEL, "messages": user_message(QUESTION, data_url(GOOD_IMAGE)), "max_tokens": 6}
    body.update(changes)
    return body


def _with_image(url: str, **changes) -> dict:
    return _body(messages=user_message(QUESTION, url), **changes)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    (root / "images").mkdir()
    (root / "images" / "frame.png").write_bytes(GOOD_IMAGE)
    (root / "secret.txt").write_text("not for clients\n")
    (root / "images" / "link.png").symlink_to(root / "secret.txt")
    return root


@pytest.fixture(scope="module")
def server(bundle_dir, folder):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL, max_body_bytes=MAX_BODY,
                             image_folder=str(folder / "images"))
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def expected(tiny_vlm):
    return tiny_vlm.answer(GOOD_IMAGE, QUESTION, max_new_tokens=6).text


def _still_right(http, expected):
    r = http.post("/v1/chat/completions", json=_body())
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected


def _error(r: httpx.Response, status: int, code: str | None):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# name -> (request kwargs for httpx.Client.request("POST", "/v1/chat/completions", ...), status, code)
JSON = {"content-type": "application/json"}
CASES = {
    "malformed JSON": (dict(content=b'{"model": "x", "messages": [', headers=JSON), 400, "invalid_json"),
    "not UTF-8": (dict(content=b'{"model": "\xff\xfe"}', headers=JSON), 400, "invalid_json"),
    "nested 100k deep": (dict(content=b"[" * 100_000 + b"]" * 100_000, headers=JSON), 400, "invalid_json"),
    "a JSON list, not an object": (dict(json=[1, 2, 3]), 400, "invalid_request"),
    "no Content-Type": (dict(content=b"{}"), 415, "unsupported_media_type"),
    "form-encoded": (dict(data={"model": MODEL}), 415, "unsupported_media_type"),
    "unknown top-level field": (dict(json=_body(stearing="none")), 400, "invalid_request"),
    "unknown field in a message": (dict(json=_body(messages=[{**user_message(QUESTION, data_url(GOOD_IMAGE))[0],
                                                                "mood": "happy"}])), 400, "invalid_request"),
    "max_tokens as a string": (dict(json=_body(max_tokens="16")), 400, "invalid_request"),
    "stream as a string": (dict(json=_body(stream="yes")), 400, "invalid_request"),
    "max_tokens 0": (dict(json=_body(max_tokens=0)), 400, "invalid_max_tokens"),
    "max_tokens above the limit": (dict(json=_body(max_tokens=100_000)), 400, "invalid_max_tokens"),
    "no messages field": (dict(json={"model": MODEL}), 400, "invalid_request"),
    "empty messages": (dict(json=_body(messages=[])), 400, "invalid_request"),
    "too many messages": (dict(json=_body(messages=user_message(QUESTION, data_url(GOOD_IMAGE)) * 9)),
                          400, "too_many_messages"),
    "a system prompt": (dict(json=_body(messages=[{"role": "system", "content": "Be terse."},
                                                  *user_message(QUESTION, data_url(GOOD_IMAGE))])),
                        400, "unsupported_conversation"),
    "unknown role": (dict(json=_body(messages=[{"role": "robot", "content": "hi"}])), 400, "invalid_request"),
    "unknown content part": (dict(json=_body(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}])), 400, "invalid_request"),
    "no image": (dict(json=_body(messages=[{"role": "user", "content": QUESTION}])), 400, "invalid_image_count"),
    "two images": (dict(json=_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": data_url(GOOD_IMAGE)}},
        {"type": "image_url", "image_url": {"url": data_url(GOOD_IMAGE)}}]}])), 400, "invalid_image_count"),
    "no question text": (dict(json=_with_image(data_url(GOOD_IMAGE)) | {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "  "}, {"type": "image_url", "image_url": {"url": data_url(GOOD_IMAGE)}}]}]}),
        400, "invalid_prompt"),
    "a control character in the question": (dict(json=_body(messages=user_message("left\x1b[2J?",
                                                                                  data_url(GOOD_IMAGE)))),
                                            400, "invalid_prompt"),
    "a question too long": (dict(json=_body(messages=user_message("left " * 1000, data_url(GOOD_IMAGE)))),
                            400, "invalid_prompt"),
    "prompt + max_tokens beyond the context": (dict(json=_body(max_tokens=512)), 400, "context_length_exceeded"),
    "bad base64": (dict(json=_with_image("data:image/png;base64,iVBOR%%%")), 400, "invalid_base64"),
    "a data URL that is not base64": (dict(json=_with_image("data:image/png,rawbytes")), 400, "invalid_image_url"),
    "a text data URL": (dict(json=_with_image("data:text/plain;base64,aGVsbG8=")), 400, "invalid_image"),
    "base64 of text, called a PNG": (dict(json=_with_image(data_url(b"hello, not an image"))), 400, "invalid_image"),
    "a truncated PNG": (dict(json=_with_image(data_url(GOOD_IMAGE[: len(GOOD_IMAGE) // 2]))), 400, "invalid_image"),
    "a decompression bomb (25 MP in a few KB)": (dict(json=_with_image(data_url(_bomb()))), 400, "invalid_image"),
    "an http URL": (dict(json=_with_image("http://169.254.169.254/latest/meta-data")), 400, "url_not_allowed"),
    "a path out of the allowed folder": (dict(json=_with_image("../secret.txt")), 400, "path_not_allowed"),
    "an absolute path out of it": (dict(json=_with_image("file:///etc/passwd")), 400, "path_not_allowed"),
    "a symlink out of it": (dict(json=_with_image("link.png")), 400, "path_not_allowed"),
    "a missing file in it": (dict(json=_with_image("nope.png")), 400, "invalid_image"),
    "an unknown scheme": (dict(json=_with_image("gopher://x/y")), 400, "invalid_image_url"),
    "an unknown model": (dict(json=_body(model="gpt-4o")), 404, "model_not_found"),
    "sampling asked for": (dict(json=_body(temperature=0.7)), 400, "unsupported_value"),
    "n = 3": (dict(json=_body(n=3)), 400, "unsupported_value"),
    "a negative alpha": (dict(json=_body(steering={"method": "scalingvis", "alpha": -1.0})), 400, "invalid_steering"),
    "an alpha per layer of the wrong length": (dict(json=_body(steering={"method": "scalingvis", "alpha": [1.0] * 7})),
                                               400, "invalid_steering"),
    "a NaN threshold": (dict(content=b'{"model": "tiny-llava", "messages": ' + httpx.Response(
        200, json=user_message(QUESTION, data_url(GOOD_IMAGE))).content + b', "steering": {"method": "adaptvis", '
        b'"threshold": NaN}}', headers=JSON), 400, "invalid_steering"),
    "an alpha of 1e38": (dict(json=_body(steering={"method": "scalingvis", "alpha": 1e38})), 400, "invalid_steering"),
    "an alpha of 1e37": (dict(json=_body(steering={"method": "scalingvis", "alpha": 1e37})), 400, "invalid_steering"),
    "an AdaptVis high of 3e38": (dict(json=_body(steering={"method": "adaptvis", "high": 3e38})),
                                 400, "invalid_steering"),
    "an AdaptVis low of 1e-30": (dict(json=_body(steering={"method": "adaptvis", "low": 1e-30})),
                                 400, "invalid_steering"),
    "the image placeholder in the question": (dict(json=_body(messages=user_message(
        "Is the <image> left of the plate?", data_url(GOOD_IMAGE)))), 400, "invalid_prompt"),
    "a float TIFF full of NaN": (dict(json=_with_image(data_url(_nan_tiff(), "image/tiff"))), 400, "invalid_image"),
    "a parameter of another method": (dict(json=_body(steering={"method": "adaptvis", "alpha": 2.0})),
                                      400, "invalid_steering"),
    "an unknown steering method": (dict(json=_body(steering="sharpen")), 400, "invalid_request"),
    "a body over the limit": (dict(json=_with_image(data_url(b"\x00" * MAX_BODY))), 413, "request_too_large"),
}


def test_at_least_twenty_kinds():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request(http, expected, name):
    kwargs, status, code = CASES[name]
    _error(http.request("POST", "/v1/chat/completions", **kwargs), status, code)
    _still_right(http, expected)


def test_the_messages_say_what_was_wrong(http):
    def message(name):
        kwargs, status, code = CASES[name]
        return _error(http.request("POST", "/v1/chat/completions", **kwargs), status, code)["message"]
    assert "alpha must lie in [0.01, 100]" in message("an alpha of 1e38")
    assert "high must lie in [0.01, 100]" in message("an AdaptVis high of 3e38")
    assert "the question contains the image placeholder '<image>' once" in message(
        "the image placeholder in the question")
    assert "NaN or infinite pixels" in message("a float TIFF full of NaN")


def test_a_chunked_body_over_the_limit(http, expected):
    """No Content-Length to trust: the guard counts what arrives and stops at the limit."""
    def pieces():
        for _ in range(4):
            yield b"x" * (MAX_BODY // 2)
    r = http.post("/v1/chat/completions", content=pieces(), headers=JSON)
    _error(r, 413, "request_too_large")
    _still_right(http, expected)


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server, expected, http):
    """413 comes back while the client has sent only its headers."""
    reply = _raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 999999999\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413")
    _still_right(http, expected)


def test_unknown_routes_and_methods(http, expected):
    _error(http.get("/v1/nothing"), 404, None)
    _error(http.get("/v1/chat/completions"), 405, None)
    _error(http.get("/v1/models/gpt-4o"), 404, "model_not_found")
    _still_right(http, expected)


def test_a_file_inside_the_allowed_folder_is_read(http, expected):
    r = http.post("/v1/chat/completions", json=_with_image("frame.png"))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected


def test_local_paths_are_refused_without_a_folder(bundle_dir, folder):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as c:
        _error(c.post("/v1/chat/completions", json=_with_image(str(folder / "images" / "frame.png"))),
               400, "path_not_allowed")


@pytest.fixture(scope="module")
def locked(bundle_dir):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL, api_key=KEY)
    with running_server(settings) as url:
        yield url


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-000", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"])
def test_without_the_right_key_every_route_is_401(locked, header, expected):
    headers = {} if header is None else {"authorization": header}
    with httpx.Client(base_url=locked, timeout=60, headers=headers) as c:
        for r in (c.post("/v1/chat/completions", json=_body()), c.get("/v1/models"), c.get("/health"),
                  c.get("/nothing")):
            error = _error(r, 401, "invalid_api_key")
            assert error["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"
    with httpx.Client(base_url=locked, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as c:
        _still_right(c, expected)


def test_401_reads_no_body(locked):
    """A request without the key announcing a 1 GB body gets 401 at once: nothing was read or run."""
    reply = _raw(locked, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401")


def _raw(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


def test_bytes_that_are_not_http(server, http, expected):
    """uvicorn's HTTP parser answers 400 itself (plain text, not our JSON: the request never reached the app)."""
    assert _raw(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    _still_right(http, expected)
