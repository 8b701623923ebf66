"""The HTTP/1.1 connection under the app: uvicorn's h11 protocol with read deadlines and a connection cap.

    connect --> more than max_connections open?  503 + close, nothing read
        |
        +--> headers within header_timeout_s ----> body within body_timeout_s ----> the app answers
        |    (from the connection, or from the       (from the end of the headers)
        |     first byte after an idle keep-alive)
        +--> late: 408 + close (silently if not a byte came)
    answered --> idle keep-alive for keep_alive_s --> close

uvicorn's own h11 protocol has only the idle keep-alive timer, and the first byte of a request
stops it: half a request (slow headers, a body that never ends, a chunked body that is not
chunked) held the socket for ever.  The deadlines are totals, not per read, so a byte-a-second
drip does not reset them.  Answering (the model's work) has no deadline here: Admission bounds it.
"""
from __future__ import annotations

import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import APIError
from .settings import ServeSettings

log = logging.getLogger("serve")


def uvicorn_options(settings: ServeSettings) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply ``settings``' connection limits."""
    protocol = type("BoundedH11Protocol", (BoundedH11Protocol,), {
        "header_timeout_s": settings.header_timeout_s, "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.max_connections})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_s}


class BoundedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 128

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._owed: str | None = None          # what the client owes: "headers", "body" or None
        self._deadline = None                  # asyncio.TimerHandle for it
        self._refused = False

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.max_connections:
            self._refused, self.transport = True, transport
            log.warning("refused a connection: %d open, the limit (--max-connections)", len(self.connections))
            transport.write(_response(APIError(
                503, f"the server holds {len(self.connections)} connections, its limit; retry after 1 s",
                type="server_overloaded", code="too_many_connections", headers={"Retry-After": "1"})))
            transport.close()
            return
        super().connection_made(transport)
        self._expect("headers")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        self._expect(None)
        super().connection_lost(exc)

    # -- the deadline ---------------------------------------------------------------------

    def _watch(self) -> None:
        """Follow h11's view of the client: owing headers (bytes of a request came), a body, or nothing."""
        state = self.conn.their_state
        if self.transport.is_closing():
            owed = None
        elif state is h11.IDLE:
            owed = "headers" if self.conn.trailing_data[0] or self._owed == "headers" else None
        else:
            owed = "body" if state is h11.SEND_BODY else None
        self._expect(owed)

    def _expect(self, owed: str | None) -> None:
        if owed == self._owed:
            return                             # the deadline runs from when it started owing
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._owed = owed
        if owed is not None:
            seconds = self.header_timeout_s if owed == "headers" else self.body_timeout_s
            self._deadline = self.loop.call_later(seconds, self._late, owed, seconds)

    def _late(self, owed: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = owed == "body" and self.cycle is not None and self.cycle.response_started
        if started or (owed == "headers" and not self.conn.trailing_data[0]):
            self.transport.close()             # answered already (401, 413...), or nothing was sent: just close
            return
        log.info("closed a connection: the request's %s did not arrive within %g s", owed, seconds)
        self.transport.write(_response(APIError(
            408, f"the request's {owed} did not arrive within {seconds:g} s; the connection is closed",
            code="request_timeout")))
        self.transport.close()


def _response(error: APIError) -> bytes:
    """A whole HTTP/1.1 response written straight to the socket (the request never reached the app)."""
    body = json.dumps(error.body()).encode()
    reason = {408: "Request Timeout", 503: "Service Unavailable"}[error.status]
    head = [f"HTTP/1.1 {error.status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in error.headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
