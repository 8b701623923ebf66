"""The request body of ``POST /v1/chat/completions``, as OpenAI's clients send it, plus our extension.

Strict: unknown fields and wrong types are refused (400), never coerced or ignored, so a typo in
``stearing`` or ``"max_tokens": "16"`` cannot silently give a different answer than asked for.

    {"model": "spatial",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Is the cup left of the plate?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}],
     "max_tokens": 16, "stream": false,
     "steering": {"method": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 0.4},   # extension
     "image_influence": true, "return_attention": false}                                # extensions
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# An alpha: one number, one per layer [L], or one per layer and head [L, H] (runtime.steering).
Alpha = Union[float, list[float], list[list[float]]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None     # accepted; the bundle's preprocessing decides


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[Part]]
    name: str | None = None


class Steering(_Strict):
    """``adaptvis``: alpha = low if confidence < threshold else high; ``scalingvis``: one alpha;
    ``none``: unsteered.  Parameters left out come from the bundle's calibration (adaptvis)."""

    method: Literal["adaptvis", "scalingvis", "none"]
    low: Alpha | None = None
    high: Alpha | None = None
    threshold: float | None = None
    alpha: Alpha | None = None
    apply_to: Literal["last_token", "after_image"] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None       # OpenAI's newer name for max_tokens
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None               # greedy decoding only: 0 or absent
    top_p: float | None = None                     # 1 or absent
    n: int | None = None                           # 1 or absent
    seed: int | None = None                        # accepted: greedy answers are deterministic anyway
    user: str | None = None
    # extensions
    steering: Union[Literal["adaptvis", "scalingvis", "none"], Steering, None] = None
    image_influence: bool = False                  # also run the blind test (one more prefill)
    return_attention: bool = False                 # the attention maps of each pass (runtime.AttentionMaps)
