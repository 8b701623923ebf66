"""The ASGI app: OpenAI's chat-completions API over one loaded bundle.

    GET  /health               {"status": "ok", "model", "running", "waiting", "capacity", "refused" (503s so far)}
    GET  /v1/models            the one model this process serves
    POST /v1/chat/completions  one question about one image; "stream": true for server-sent events

Request path:  Guard (API key, body size) -> JSON -> schema (strict) -> chat.plan (limits, steering,
image source) -> Admission (bounded threads + queue, else 503) -> worker thread: read the image
(pixel limit on the header), vlm.answer / vlm.stream_answer -> OpenAI JSON + our extension object.
Nothing a request sends can change what a later request gets: the model is read-only, and the
only shared state (the runtime's image cache) is keyed by the image's pixels and the prompt.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse

import runtime
from runtime.errors import RuntimeInputError
from runtime.images import load_image

from . import chat
from .admission import Admission
from .errors import APIError, from_runtime
from .guard import Guard
from .schema import ChatCompletionRequest
from .settings import ServeSettings

log = logging.getLogger("serve")


def create_app(settings: ServeSettings, vlm: runtime.VLM | None = None):
    """Load the bundle (unless ``vlm`` is given) and return the app, wrapped in its Guard."""
    vlm = vlm if vlm is not None else runtime.load(settings.bundle, providers=list(settings.providers),
                                                   threads=settings.threads)
    admission = Admission(settings.max_concurrent, settings.max_queue)
    created = int(time.time())
    name = settings.served_name
    replica = f"{os.uname().nodename}:{os.getpid()}"

    @asynccontextmanager
    async def lifespan(_):
        yield
        admission.shutdown()

    app = FastAPI(title="adaptvis-edge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.vlm, app.state.admission, app.state.settings = vlm, admission, settings

    @app.middleware("http")
    async def served_by(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Replica"] = replica       # which process answered (Ray Serve: which replica)
        return response

    @app.exception_handler(APIError)
    async def api_error(_, e: APIError):
        return e.response()

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "invalid_request")
        return APIError(e.status_code, f"{e.detail}", code=kind, headers=dict(e.headers or {})).response()

    @app.exception_handler(Exception)
    async def internal_error(_, e: Exception):
        log.exception("internal error")
        return APIError(500, f"internal error ({type(e).__name__}); the server is still up, see its log",
                        type="server_error", code="internal_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "running": admission.running, "waiting": admission.waiting,
                "capacity": settings.capacity, "refused": admission.refused}

    def model_card() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "adaptvis-edge"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != name:
            raise APIError(404, f"model {model_id[:100]!r} is not served here; this server serves {name!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        admission.refuse_if_full()               # before parsing JSON and decoding base64
        call = chat.plan(await _parse(request), settings, vlm.default_steering)
        if call.stream:
            return await _stream(call)
        answer = await admission.run(lambda: _answer(call))
        return JSONResponse(chat.completion(answer, call, name))

    def _answer(call: chat.Call) -> runtime.Answer:
        """On a worker thread: read the image (pixel limit first), answer; runtime errors -> 400."""
        try:
            picture = load_image(call.image, max_pixels=settings.max_image_pixels)
            return vlm.answer(picture, call.question, steering=call.steering, max_new_tokens=call.max_tokens,
                              measure_image_influence=call.image_influence, return_attention=call.return_attention)
        except RuntimeInputError as e:
            raise from_runtime(e) from None

    async def _stream(call: chat.Call):
        def produce(push, stop):
            try:
                picture = load_image(call.image, max_pixels=settings.max_image_pixels)
                pieces = vlm.stream_answer(picture, call.question, steering=call.steering,
                                           max_new_tokens=call.max_tokens,
                                           measure_image_influence=call.image_influence,
                                           return_attention=call.return_attention)
                for item in pieces:
                    push(("item", item))
                    if stop.is_set():                  # the client left: stop at this token
                        pieces.close()
                        return
                push(("end", None))
            except RuntimeInputError as e:
                push(("error", from_runtime(e)))
            except Exception as e:
                log.exception("internal error while streaming")
                push(("error", APIError(500, f"internal error ({type(e).__name__}); see the server log",
                                        type="server_error", code="internal_error")))

        items, stop = await admission.start(produce)
        kind, first = await items.get()
        if kind == "error":                            # bad input: a plain JSON error, before any event
            stop.set()
            raise first
        ident, created_at = chat.completion_id(), int(time.time())

        async def events():
            kind, item = "item", first
            try:
                yield _sse(chat.chunk(ident, created_at, name, {"role": "assistant", "content": ""}))
                while kind == "item":
                    if isinstance(item, str):
                        yield _sse(chat.chunk(ident, created_at, name, {"content": item}))
                    else:                              # the Answer: last
                        yield _sse(chat.chunk(ident, created_at, name, {}, chat.finish_reason(item, call),
                                              **{chat.EXTENSION: chat.extension(item, call.question)}))
                        if call.include_usage:
                            yield _sse({**chat.chunk(ident, created_at, name, {}), "choices": [],
                                        "usage": chat.usage(item)})
                    kind, item = await items.get()
                if kind == "error":
                    yield _sse(item.body())
                yield "data: [DONE]\n\n"
            finally:
                stop.set()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return Guard(app, settings.api_key, settings.max_body_bytes)


async def _parse(request: Request) -> ChatCompletionRequest:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, f"the body must be JSON with 'Content-Type: application/json'; got "
                            f"{kind[:60] or 'no Content-Type'!r}", code="unsupported_media_type")
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"the body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        problems = e.errors(include_url=False)
        where = ".".join(str(p) for p in problems[0]["loc"]) or None
        shown = "; ".join(f"{'.'.join(str(p) for p in x['loc']) or 'body'}: {x['msg']}" for x in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise APIError(400, f"invalid request: {shown}{more}", param=where, code="invalid_request") from None


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
