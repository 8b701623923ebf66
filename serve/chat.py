"""A validated chat request -> the one ``vlm.answer()`` call it means, and an ``Answer`` -> OpenAI's JSON.

    messages = [{"role": "user", "content": [text..., one image_url]}]
        -> vlm.answer(image, "\\n".join(texts), steering, max_new_tokens, measure_image_influence, return_attention)

One user message holding one image: the bundle's prompt template is LLaVA-1.5's single turn
("USER: <image>\\n{question} ASSISTANT:"), so system prompts and earlier turns are refused, not
silently dropped.  Decoding is greedy (AdaptVis's confidence is the greedy first token's probability).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import runtime
from runtime.__main__ import answer_warning

from .errors import APIError
from .images import image_source
from .schema import ChatCompletionRequest, ImagePart, Steering, TextPart
from .settings import ServeSettings

EXTENSION = "adaptvis_edge"        # the response's extension object: confidence, alpha, image influence...


@dataclass(frozen=True)
class Call:
    """Everything one answer needs, checked; ``image`` is read (and size-checked) on the worker thread."""

    image: bytes | Path
    question: str
    steering: object                  # runtime.AdaptVis | runtime.ScalingVis | None
    max_tokens: int
    image_influence: bool
    return_attention: bool
    stream: bool
    include_usage: bool


def plan(request: ChatCompletionRequest, settings: ServeSettings, default_steering) -> Call:
    if request.model != settings.served_name:
        raise APIError(404, f"model {request.model[:100]!r} is not served here; this server serves "
                            f"{settings.served_name!r} (GET /v1/models)", param="model", code="model_not_found")
    if len(request.messages) > settings.max_messages:
        raise APIError(400, f"{len(request.messages)} messages; at most {settings.max_messages} are accepted",
                       param="messages", code="too_many_messages")
    roles = [m.role for m in request.messages]
    if roles != ["user"]:
        raise APIError(400, f"this server answers one question about one image per request: send exactly one "
                            f"'user' message (text and one image_url); got roles {roles} (the bundle's prompt "
                            "template is single-turn: system prompts and earlier turns are not supported)",
                       param="messages", code="unsupported_conversation")
    texts, images = _parts(request.messages[0].content)
    if len(images) != 1:
        raise APIError(400, f"the message must hold exactly one image_url part; it holds {len(images)}",
                       param="messages", code="invalid_image_count")
    question = "\n".join(texts)
    if not question.strip():
        raise APIError(400, "the message holds no question text", param="messages", code="invalid_prompt")
    if len(question) > settings.max_text_chars:
        raise APIError(400, f"the question has {len(question)} characters; at most {settings.max_text_chars} "
                            "are accepted", param="messages", code="invalid_prompt")
    _greedy_only(request)
    max_tokens = _max_tokens(request, settings)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    if request.stream_options is not None and not request.stream:
        raise APIError(400, "stream_options is only allowed with stream: true", param="stream_options")
    return Call(image=image_source(images[0], settings.image_folder), question=question,
                steering=_steering(request.steering, default_steering), max_tokens=max_tokens,
                image_influence=request.image_influence, return_attention=request.return_attention,
                stream=request.stream, include_usage=include_usage)


def _parts(content) -> tuple[list[str], list[str]]:
    if isinstance(content, str):
        return [content], []
    texts = [p.text for p in content if isinstance(p, TextPart)]
    images = [p.image_url.url for p in content if isinstance(p, ImagePart)]
    return texts, images


def _greedy_only(request: ChatCompletionRequest) -> None:
    if request.temperature not in (None, 0, 0.0):
        raise APIError(400, f"temperature {request.temperature} asks for sampling; this server decodes greedily "
                            "(AdaptVis's confidence is the greedy first token's probability): omit it or send 0",
                       param="temperature", code="unsupported_value")
    if request.top_p not in (None, 1, 1.0):
        raise APIError(400, "top_p must be 1 or absent (greedy decoding)", param="top_p", code="unsupported_value")
    if request.n not in (None, 1):
        raise APIError(400, "n must be 1 or absent: greedy decoding gives one answer", param="n",
                       code="unsupported_value")


def _max_tokens(request: ChatCompletionRequest, settings: ServeSettings) -> int:
    if request.max_tokens is not None and request.max_completion_tokens is not None \
            and request.max_tokens != request.max_completion_tokens:
        raise APIError(400, "max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
    value = request.max_tokens if request.max_tokens is not None else request.max_completion_tokens
    if value is None:
        return settings.default_max_tokens
    if not 1 <= value <= settings.max_tokens_limit:
        raise APIError(400, f"max_tokens must be in [1, {settings.max_tokens_limit}], got {value}",
                       param="max_tokens", code="invalid_max_tokens")
    return value


def _steering(asked: str | Steering | None, default):
    """None -> the bundle's calibrated AdaptVis (what runtime.answer() does by default)."""
    if asked is None:
        return default
    if isinstance(asked, str):
        asked = Steering(method=asked)
    given = {k for k in ("low", "high", "threshold", "alpha", "apply_to") if getattr(asked, k) is not None}
    allowed = {"adaptvis": {"low", "high", "threshold", "apply_to"}, "scalingvis": {"alpha", "apply_to"},
               "none": set()}[asked.method]
    if given - allowed:
        raise APIError(400, f"{sorted(given - allowed)} are not parameters of steering {asked.method!r} "
                            f"(it takes {sorted(allowed) or 'none'})", param="steering", code="invalid_steering")
    try:
        if asked.method == "none":
            return None
        if asked.method == "scalingvis":
            if asked.alpha is None:
                raise APIError(400, "steering 'scalingvis' needs an alpha", param="steering",
                               code="invalid_steering")
            return runtime.ScalingVis(asked.alpha, apply_to=asked.apply_to or "last_token")
        return runtime.AdaptVis(low=default.low if asked.low is None else asked.low,
                                high=default.high if asked.high is None else asked.high,
                                threshold=default.threshold if asked.threshold is None else asked.threshold,
                                round_confidence=default.round_confidence,
                                apply_to=asked.apply_to or default.apply_to)
    except runtime.errors.SteeringError as e:
        raise APIError(400, f"SteeringError: {e}", param="steering", code="invalid_steering") from None


# -- responses -------------------------------------------------------------------------------

def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(answer: runtime.Answer, call: Call) -> str:
    return "length" if len(answer.token_ids) >= call.max_tokens else "stop"


def extension(answer: runtime.Answer, question: str) -> dict:
    """``warning``: why the answer is not one the model was trained to give (it repeats the question, or is
    none of the options the question lists), else None."""
    d = answer.to_dict()
    return {"steering": answer.steering, "confidence": answer.confidence, "alpha": d["alpha"],
            "image_influence": d["image_influence"], "timings": d["timings"], "attention": d["attention"],
            "warning": answer_warning(question, answer.text)}


def usage(answer: runtime.Answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": len(answer.token_ids),
            "total_tokens": answer.prompt_tokens + len(answer.token_ids)}


def completion(answer: runtime.Answer, call: Call, model: str) -> dict:
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "logprobs": None, "finish_reason": finish_reason(answer, call)}],
            "usage": usage(answer), EXTENSION: extension(answer, call.question)}


def chunk(ident: str, created: int, model: str, delta: dict, finish: str | None = None, **more) -> dict:
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **more}
