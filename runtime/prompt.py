"""Prompt -> token ids with the image placeholder expanded, the image-token span and the decoder's positions.

    text --template--> "... <image> question ..." --tokenizer--> ids with one image token
         --layout.expand--> Prompt: ids with the image's tokens, [image_start, image_end), positions

The family's image-token layout (``layout``) says how many tokens an image takes and which positions
the decoder sees: LLaVA's ``FixedLayout`` (a fixed run, positions 0..n-1), Qwen's
``runtime.qwen_vl.layout.GridLayout`` (t*h*w / merge^2 tokens, M-RoPE positions [3, 1, n]).
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from graphs.manifest import Manifest

from .errors import PromptError

MAX_QUESTION_CHARS = 4000


@dataclass(frozen=True, eq=False)
class Prompt:
    ids: np.ndarray           # int64 [n]: the prompt with the image placeholder expanded
    image_start: int          # index of the first image token
    image_end: int            # index after the last image token
    positions: np.ndarray | None = None    # int64 M-RoPE [3, 1, n]; None: 0..n-1 (1-D, the cache positions)
    position_delta: int = 0   # a generated token at cache position c sits at c + delta (M-RoPE's rope delta)

    def positions_at(self, lo: int, hi: int) -> np.ndarray | None:
        """The decoder's position_ids for prompt rows [lo, hi): [3, 1, S]; None where they are the cache
        positions lo..hi-1, which the decoder counts itself (LLaVA)."""
        return None if self.positions is None else np.ascontiguousarray(self.positions[..., lo:hi])

    def decode_positions(self, cache_length: int) -> np.ndarray | None:
        """position_ids of a generated token at ``cache_length``: [3, 1, 1], one value on every axis (None: the
        cache position itself)."""
        if self.positions is None:
            return None
        return np.full((*self.positions.shape[:-1], 1), cache_length + self.position_delta, dtype=np.int64)

    @property
    def image_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.ids), dtype=bool)    # [n]
        mask[self.image_start: self.image_end] = True
        return mask


class FixedLayout:
    """LLaVA: the image token becomes a fixed run of ``count`` tokens; positions 0..n-1."""

    def __init__(self, image_id: int, count: int):
        self.image_id, self.count = image_id, count

    def expand(self, ids: list[int], at: int, image=None) -> Prompt:
        expanded = ids[:at] + [self.image_id] * self.count + ids[at + 1:]
        return Prompt(np.asarray(expanded, dtype=np.int64), at, at + self.count)


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer, template: str, placeholder: str, image_id: int, layout):
        self.tokenizer = tokenizer
        self.template, self.placeholder, self.image_id = template, placeholder, image_id
        self.layout = layout             # FixedLayout or runtime.qwen_vl.layout.GridLayout

    @classmethod
    def for_llava(cls, tokenizer: Tokenizer, manifest: Manifest) -> "PromptBuilder":
        return cls(tokenizer, manifest.prompt_template, manifest.image_placeholder, manifest.image_token_id,
                   FixedLayout(manifest.image_token_id, manifest.image_tokens_per_image))

    def from_question(self, question: str, image=None) -> Prompt:
        """Apply the bundle's chat template (LLaVA-1.5: 'USER: <image>\\n{question} ASSISTANT:'); ``image``
        (a ``runtime.image_input.PreparedImage``) where the family's token count depends on it."""
        check_text(question, "question")
        placeholder = self.placeholder
        if placeholder in question:
            raise PromptError(f"the question contains the image placeholder {placeholder!r} "
                              f"{_times(question.count(placeholder))}; the chat template already holds the one image "
                              f"slot, so each {placeholder!r} in the question would add another: "
                              f"remove it (or pass a whole prompt with one placeholder to generate())")
        return self.from_raw(self.template.format(question=question.strip()), image)

    def from_raw(self, prompt: str, image=None) -> Prompt:
        """A raw prompt holding exactly one image placeholder."""
        check_text(prompt, "prompt", limit=MAX_QUESTION_CHARS * 4)
        placeholder = self.placeholder
        if prompt.count(placeholder) != 1:
            raise PromptError(f"the prompt must contain the image placeholder {placeholder!r} exactly once, "
                              f"found it {_times(prompt.count(placeholder))}")
        ids = self.tokenizer.encode(prompt, add_special_tokens=True).ids
        where = [i for i, t in enumerate(ids) if t == self.image_id]
        if len(where) != 1:
            raise PromptError(f"the tokenizer produced {len(where)} image tokens for the placeholder, expected 1")
        return self.layout.expand(ids, where[0], image)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _times(n: int) -> str:
    return {0: "0 times", 1: "once", 2: "twice"}.get(n, f"{n} times")


def check_text(text, what: str, limit: int = MAX_QUESTION_CHARS) -> None:
    if not isinstance(text, str):
        raise PromptError(f"the {what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise PromptError(f"the {what} is empty")
    if len(text) > limit:
        raise PromptError(f"the {what} has {len(text)} characters; at most {limit} are accepted")
    bad = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Cn") and c not in "\n\t"})
    if bad:
        raise PromptError(f"the {what} contains control or invalid characters: {', '.join(repr(c) for c in bad[:5])}")
