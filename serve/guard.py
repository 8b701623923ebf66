"""The first thing every HTTP request meets (pure ASGI, before any routing or parsing):

    request --> one framing? (400) --> API key? (401, nothing read) --> body <= max_body_bytes? (413, reading
    stops) --> the app

The body is read here, bounded, whether or not it declares a Content-Length (chunked uploads
count too), then handed to the app as it was.
"""
from __future__ import annotations

import hmac

from .errors import APIError, unauthorized

_WITH_BODY = {"POST", "PUT", "PATCH"}


class Guard:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "content-length" in headers and "transfer-encoding" in headers:
            # RFC 9112 6.1: a server may refuse it and must close; a proxy in front may frame it the other way
            return await APIError(400, "the request has both Content-Length and Transfer-Encoding: send one",
                                  code="invalid_request", headers={"Connection": "close"}).response()(
                scope, receive, send)
        if self.api_key is not None and not self._authorized(headers.get("authorization", "")):
            return await unauthorized().response()(scope, receive, send)
        if scope["method"] not in _WITH_BODY:
            return await self.app(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await APIError(400, f"invalid Content-Length header {declared[:30]!r}",
                                      code="invalid_request").response()(scope, receive, send)
            if int(declared) > self.max_body_bytes:
                return await _too_large(int(declared), self.max_body_bytes).response()(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await _too_large(len(body), self.max_body_bytes).response()(scope, receive, send)
            if not message.get("more_body", False):
                break
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()           # after the body: wait for the client to disconnect
        await self.app(scope, replay, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


def _too_large(size: int, limit: int) -> APIError:
    return APIError(413, f"the request body has {'more than ' if size > limit else ''}{size} bytes; at most {limit} "
                         "are accepted (--max-body-bytes)", code="request_too_large")
