"""Half-sent requests over raw sockets: each is cut off at its deadline (408, closed), a connection past the
limit gets 503, and the server answers the next good request as before.  Deadlines of 1 s keep this quick."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from serve import ServeSettings
from tests.serve.conftest import MODEL, QUESTION, data_url, png_bytes, running_server, user_message

LIMIT = 1.0                 # header, body and keep-alive timeouts of the server under test, in seconds
CONNECTIONS = 6
GOOD = {"model": MODEL, "messages": user_message(QUESTION, data_url(png_bytes(5))), "max_tokens": 6}
POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(bundle_dir, tiny_vlm):
    settings = ServeSettings(bundle=str(bundle_dir("tiny")), model_name=MODEL, header_timeout_s=LIMIT,
                             body_timeout_s=LIMIT, keep_alive_s=LIMIT, max_connections=CONNECTIONS)
    with running_server(settings, tiny_vlm) as url:
        yield url


@pytest.fixture(scope="module")
def expected(tiny_vlm):
    return tiny_vlm.answer(png_bytes(5), QUESTION, max_new_tokens=6).text


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _until_closed(s: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    t0, got = time.monotonic(), b""
    while chunk := s.recv(65536):
        got += chunk
    return got, time.monotonic() - t0


def _one_response(s: socket.socket) -> bytes:
    """One whole response with a Content-Length (its head and body may come in separate reads)."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def _error(reply: bytes, status: int, code: str) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), reply[:300]
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def _still_right(url: str, expected: str):
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/chat/completions", json=GOOD)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected, r.text


@pytest.mark.parametrize("sent", [b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", b"G", b"GET /health HTTP/1.1"])
def test_half_sent_headers_get_408_at_the_deadline(server, expected, sent):
    with _connect(server) as s:
        s.sendall(sent)
        reply, took = _until_closed(s)
    error = _error(reply, 408, "request_timeout")
    assert "headers did not arrive within 1 s" in error["message"] and LIMIT * 0.9 < took < LIMIT + 2
    _still_right(server, expected)


def test_a_connection_that_sends_nothing_is_closed(server):
    with _connect(server) as s:
        reply, took = _until_closed(s)
    assert reply == b"" and LIMIT * 0.9 < took < LIMIT + 2


def test_dripping_the_headers_does_not_extend_the_deadline(server, expected):
    with _connect(server) as s:
        t0 = time.monotonic()
        try:
            for byte in POST:                      # 80 bytes, one per 0.1 s: 8 s if the drip reset the clock
                s.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:                            # the server closed: the rest could not be sent
            pass
        reply, _ = _until_closed(s)
        took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408") and took < LIMIT + 2
    _still_right(server, expected)


@pytest.mark.parametrize("body", [b"", b'{"model": "tiny', b'{"model": "tiny-llava", "messages": []}'])
def test_a_body_shorter_than_its_length_gets_408(server, expected, body):
    with _connect(server) as s:
        s.sendall(POST + f"Content-Length: {len(body) + 100}\r\n\r\n".encode() + body)
        reply, took = _until_closed(s)
    error = _error(reply, 408, "request_timeout")
    assert "body did not arrive within 1 s" in error["message"] and LIMIT * 0.9 < took < LIMIT + 2
    _still_right(server, expected)


def test_a_chunked_body_that_never_ends_gets_408(server, expected):
    with _connect(server) as s:
        s.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n")
        reply, _ = _until_closed(s)
    _error(reply, 408, "request_timeout")
    _still_right(server, expected)


def test_length_and_chunked_together_are_refused_at_once(server, expected):
    body = json.dumps(GOOD).encode()
    with _connect(server) as s:
        s.sendall(POST + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body)
        reply, took = _until_closed(s)
    error = _error(reply, 400, "invalid_request")
    assert "both Content-Length and Transfer-Encoding" in error["message"] and took < LIMIT * 0.9
    _still_right(server, expected)


def test_an_idle_keep_alive_connection_is_closed(server):
    with _connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _one_response(s)
        reply, took = _until_closed(s)
    assert first.startswith(b"HTTP/1.1 200") and reply == b"" and took < LIMIT + 2


def test_half_a_second_request_on_a_kept_connection_gets_408(server, expected):
    with _connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _one_response(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")
        reply, took = _until_closed(s)
    _error(reply, 408, "request_timeout")
    assert took < LIMIT + 2
    _still_right(server, expected)


def test_connections_past_the_limit_get_503_until_the_held_ones_time_out(server, expected):
    held = [_connect(server) for _ in range(CONNECTIONS)]
    for s in held:
        s.sendall(b"GET /health HTTP/1.1\r\n")          # each holds its slot with half a request
    time.sleep(0.2)
    try:
        for _ in range(3):
            with _connect(server) as extra:
                reply, took = _until_closed(extra)
            error = _error(reply, 503, "too_many_connections")
            assert b"retry-after: 1" in reply.lower() and "its limit" in error["message"] and took < LIMIT * 0.9
        for s in held:
            assert _until_closed(s)[0].startswith(b"HTTP/1.1 408")
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    _still_right(server, expected)
