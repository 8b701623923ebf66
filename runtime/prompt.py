"""Prompt -> token ids with the image placeholder expanded, and the image-token mask."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from graphs.manifest import Manifest

from .errors import PromptError

MAX_QUESTION_CHARS = 4000


@dataclass(frozen=True)
class Prompt:
    ids: np.ndarray           # int64 [n]: the prompt with the image placeholder expanded
    image_start: int          # index of the first image token
    image_end: int            # index after the last image token

    @property
    def image_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.ids), dtype=bool)    # [n]
        mask[self.image_start: self.image_end] = True
        return mask


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer, manifest: Manifest):
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.image_id = manifest.image_token_id
        self.image_tokens = manifest.image_tokens_per_image

    def from_question(self, question: str) -> Prompt:
        """Apply the bundle's chat template (LLaVA-1.5: 'USER: <image>\\n{question} ASSISTANT:')."""
        check_text(question, "question")
        placeholder = self.manifest.image_placeholder
        if placeholder in question:
            raise PromptError(f"the question contains the image placeholder {placeholder!r} "
                              f"{_times(question.count(placeholder))}; the chat template already holds the one image "
                              f"slot, so each {placeholder!r} in the question would add another: "
                              f"remove it (or pass a whole prompt with one placeholder to generate())")
        return self.from_raw(self.manifest.prompt_template.format(question=question.strip()))

    def from_raw(self, prompt: str) -> Prompt:
        """A raw prompt holding exactly one image placeholder."""
        check_text(prompt, "prompt", limit=MAX_QUESTION_CHARS * 4)
        placeholder = self.manifest.image_placeholder
        if prompt.count(placeholder) != 1:
            raise PromptError(f"the prompt must contain the image placeholder {placeholder!r} exactly once, "
                              f"found it {_times(prompt.count(placeholder))}")
        ids = self.tokenizer.encode(prompt, add_special_tokens=True).ids
        where = [i for i, t in enumerate(ids) if t == self.image_id]
        if len(where) != 1:
            raise PromptError(f"the tokenizer produced {len(where)} image tokens for the placeholder, expected 1")
        at = where[0]
        expanded = ids[:at] + [self.image_id] * self.image_tokens + ids[at + 1:]
        return Prompt(np.asarray(expanded, dtype=np.int64), at, at + self.image_tokens)

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
