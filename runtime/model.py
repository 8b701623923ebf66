"""A loaded bundle that answers questions about images, with AdaptVis steering: every family, one schedule.

The schedule of one answer (n prompt tokens, image tokens at [s, e)):

    prepare(image)                        the family's image input: the vision feeds, the image's token count
    prompt(question, image)               ids with the image's tokens and the decoder's positions (LLaVA: the
                                          cache positions; Qwen: M-RoPE's [3, 1, n], decode steps at c + delta)
    vision(image)                         once per image (cached by pixel digest)
    prefill [0, e)        alpha = 1       once per image (cached): the image prefix
    prefill [e, k)        alpha = 1       the question; k = n-1 (scale the last token, the paper's
                                          default) or k = e (scale every token after the image)
    step    [k, n)        alpha = 1   --> confidence = max softmax of the first token   (not for ScalingVis)
    step    [k, n)        alpha = a   --> first token, from the same cache as the line above
    decode  greedy, alpha = 1, until EOS or max_new_tokens

So AdaptVis costs one extra step of n-k tokens over plain decoding, and the
answers equal those of two full, independent generations (tests prove it).

Each answer takes a cache with room for n + max_new_tokens tokens from the decoder
(``runtime/sessions.py``: the fused pair's preallocated KV buffers, or the standard decoder's
immutable caches), starts it from the image prefix (kept as a snapshot across answers) and
gives it back when the answer ends, however it ends.

What differs between families (LLaVA, Qwen2.5-VL, Qwen3-VL) are the objects this schedule calls
(``runtime/model_parts.py``): the sessions, the image input, the prompt's layout and positions, the stop
tokens; DeepStack's rows (Qwen3-VL) ride along with each decoder call, zero on generated tokens.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np

from .answer import Answer, AttentionMaps, ImageInfluence, Timings
from .attention import attention_maps
from .bundle import Bundle
from .errors import NumericalError, PromptError, SteeringError
from .image_features import ImageFeatures
from .image_input import PreparedImage
from .images import load_image
from .model_parts import model_parts
from .prompt import Prompt
from .providers import resolve_providers
from .steering import PAPER_DEFAULT, AdaptVis, ScalingVis, brief, describe, scale_tensor

_DEFAULT = object()        # "use the bundle's calibration, else the paper's defaults"
_CACHED_IMAGES = 4         # image features + image-prefix KV kept per model (LRU)

# Default lengths: a question through the chat template is answered in a few words (the spatial
# model's one relation word and EOS), so answer(), stream() and stream_answer() agree on 16; a raw
# prompt to generate() is free text, so it gets more room.
ANSWER_TOKENS = 16
PROMPT_TOKENS = 32

class VLM:
    def __init__(self, bundle: str | Path | Bundle, providers=("cpu",), fallback: bool = False,
                 verify_checksums: bool = True, threads: int | None = None, decoder: str = "auto",
                 cuda_graph: bool = False):
        self.bundle = Bundle.open(bundle, verify_checksums)
        self.folder = self.bundle.folder
        self.manifest = self.bundle.manifest          # graphs.manifest.Manifest, or a QwenManifest
        self.family = self.bundle.family
        self.providers = resolve_providers(providers, fallback)
        parts = model_parts(self.bundle, self.providers, threads, decoder, cuda_graph)
        self.sessions, self.images, self.prompts = parts.sessions, parts.images, parts.prompts
        self.shape, self.stop_ids = parts.shape, parts.stop_ids
        self.default_steering = calibrated_steering(self.bundle)
        self._ones = scale_tensor(1.0, self.shape.num_layers, self.shape.num_attention_heads)     # [1, L, H]
        self._lock = threading.Lock()
        self._images: OrderedDict[str, tuple] = OrderedDict()      # key -> (features, prefix snapshot)

    # -- public API ---------------------------------------------------------------------

    def answer(self, image, question: str, steering=_DEFAULT, max_new_tokens: int = ANSWER_TOKENS,
               measure_image_influence: bool = False, blank_image=None, return_attention: bool = False) -> Answer:
        """Answer a question with the bundle's chat template and AdaptVis by default.

        ``measure_image_influence`` compares the first-token distribution with one for
        ``blank_image`` (default: a mean-colour image), at the cost of one more prefill.

        ``return_attention`` puts on ``Answer.attention`` the last prompt token's attention
        over the image, per layer (``runtime.AttentionMaps``), for each pass that ran:
        ``"confidence"`` (alpha = 1) and ``"rescaled"`` (the chosen alpha) with AdaptVis;
        only ``"confidence"`` with ``steering=None`` (its one pass is unsteered; it also gives
        the answer); only ``"rescaled"`` with ScalingVis (plus ``"confidence"`` when
        ``measure_image_influence`` runs that pass anyway).  It costs a copy of a
        [layers, prompt] array per pass; a bundle exported before the decoder had attention
        outputs raises ``BundleError`` (re-export it), and answers as before without it.
        """
        return self._drain(self._run(image, question, self.prompts.from_question, steering, max_new_tokens,
                                     measure_image_influence, blank_image, return_attention))

    def generate(self, image, prompt: str, steering=_DEFAULT, max_new_tokens: int = PROMPT_TOKENS,
                 measure_image_influence: bool = False, blank_image=None, return_attention: bool = False) -> Answer:
        """A raw prompt (no template) holding the image placeholder once; ``return_attention`` as in ``answer``."""
        return self._drain(self._run(image, prompt, self.prompts.from_raw, steering, max_new_tokens,
                                     measure_image_influence, blank_image, return_attention))

    def stream(self, image, question: str, steering=_DEFAULT, max_new_tokens: int = ANSWER_TOKENS) -> Iterator[str]:
        """Yield the answer's text piece by piece as tokens are generated."""
        for piece in self.stream_answer(image, question, steering, max_new_tokens):
            if isinstance(piece, str):
                yield piece

    def stream_answer(self, image, question: str, steering=_DEFAULT, max_new_tokens: int = ANSWER_TOKENS,
                      measure_image_influence: bool = False, blank_image=None,
                      return_attention: bool = False) -> Iterator[str | Answer]:
        """Yield the answer's text piece by piece, then, last, the whole ``Answer`` (confidence, alpha...).

        The pieces join into ``Answer.text``, and the ``Answer`` equals ``answer()``'s with the
        same arguments.  Bad input raises on the first ``next()``, before any piece; logits that come
        out NaN or infinite while decoding raise ``NumericalError`` after the pieces given so far."""
        run = self._run(image, question, self.prompts.from_question, steering, max_new_tokens,
                        measure_image_influence, blank_image, return_attention)
        ids: list[int] = []
        shown = ""
        while True:
            try:
                ids.append(next(run))
            except StopIteration as stop:
                answer: Answer = stop.value
                break
            text = self.prompts.decode(ids)
            # hold back a half-decoded character (a multi-byte one split across tokens shows as U+FFFD)
            if len(text) > len(shown) and text.startswith(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
        if answer.text != shown and answer.text.startswith(shown):
            yield answer.text[len(shown):]          # a tail the tokenizer only settled at the end
        yield answer

    def clear_cache(self) -> None:
        """Forget cached image features and image prefixes (the next answer starts cold)."""
        with self._lock:
            self._images.clear()

    # -- the schedule ------------------------------------------------------------------------

    @staticmethod
    def _drain(run) -> Answer:
        while True:
            try:
                next(run)
            except StopIteration as stop:
                return stop.value

    def _run(self, image, text: str, build, steering, max_new_tokens: int, measure_image_influence: bool,
             blank_image, return_attention: bool = False):
        """Generator: yields generated token ids; its return value is the Answer.  ``build(text, image)``
        makes the prompt (``from_question`` or ``from_raw``) once the image's token count is known."""
        steering = self._steering(steering)
        if return_attention:
            self.sessions.require_attention_outputs()
        d = self.shape
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise PromptError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        for alpha in _alphas(steering):        # shapes checked before any work
            scale_tensor(alpha, d.num_layers, d.num_attention_heads)
        picture = load_image(image)
        prepared = self.images.prepare(picture)
        prompt = build(text, prepared)
        self._check_length(prompt, max_new_tokens)
        # return_attention: "confidence" / "rescaled" -> AttentionMaps
        maps: dict[str, AttentionMaps] | None = {} if return_attention else None
        blank = None
        if measure_image_influence:
            blank = self.images.blank(blank_image, prepared)
            blank = (blank, build(text, blank))

        t = time.perf_counter
        t0 = t()
        # the answer's own cache, holding the image prefix: room for the prompt and every new token
        features, prefix, vision_s, prefix_s = self._image_prefix(prepared, prompt, len(prompt.ids) + max_new_tokens)
        try:
            answer = yield from self._answer(prompt, steering, max_new_tokens, measure_image_influence, blank, maps,
                                             prepared, features, prefix, t0, vision_s)
        finally:
            self.sessions.release(prefix)
        return answer

    def _check_length(self, prompt: Prompt, max_new_tokens: int) -> None:
        n, image_tokens = len(prompt.ids), prompt.image_end - prompt.image_start
        context = self.sessions.max_context      # the model's, or less: what prebuilt TensorRT engines were built for
        engines = "" if context == self.shape.max_position_embeddings else " the TensorRT engines were built for"
        if n + max_new_tokens > context:
            raise PromptError(f"the prompt has {n} tokens (with {image_tokens} image tokens) "
                              f"and {max_new_tokens} new tokens were asked for: {n + max_new_tokens} exceeds the "
                              f"context of {context}{engines}")
        if n > self.sessions.max_prompt:
            raise PromptError(f"the prompt has {n} tokens (with {image_tokens} image tokens): "
                              f"more than the {self.sessions.max_prompt} the TensorRT engines were built for "
                              f"(rebuild them with a larger --max-prompt: just engines {self.folder} ...)")

    def _answer(self, prompt: Prompt, steering, max_new_tokens: int, measure_image_influence: bool, blank, maps,
                image: PreparedImage, features: ImageFeatures, prefix, t0: float, vision_s: float):
        """The schedule after the image prefix (``_run``'s sketch), in the cache ``prefix`` starts."""
        t = time.perf_counter
        d = self.shape
        n = len(prompt.ids)
        image_mask = np.zeros((1, n + max_new_tokens), dtype=bool)               # [1, n + new]
        image_mask[0, prompt.image_start: prompt.image_end] = True
        embeds = self._embeds(prompt, features)                                  # [1, n, C]
        split = n - 1 if steering is None or steering.apply_to == "last_token" else max(prompt.image_end, 1)
        split = min(split, n - 1)
        t1 = t()
        cache = prefix
        if split > prefix.length:
            _, cache = self.sessions.step(embeds[:, prefix.length: split], prefix, self._ones, image_mask,
                                          *self._rows(prompt, features, prefix.length, split))
        t2 = t()
        tail = (embeds[:, split:], *self._rows(prompt, features, split, n))
        confidence = plain = None
        if not isinstance(steering, ScalingVis) or measure_image_influence:
            plain = self._prompt_end(tail, cache, self._ones, image_mask, maps, "confidence", prompt, image)
            confidence = float(_softmax(_finite(plain[0], "the confidence pass (alpha = 1)")).max())
        t3 = t()
        if steering is None:
            alpha, (logits, cache) = None, plain
        else:
            alpha = steering.choose(confidence) if isinstance(steering, AdaptVis) else steering.alpha
            scale = scale_tensor(alpha, d.num_layers, d.num_attention_heads)
            logits, cache = self._prompt_end(tail, cache, scale, image_mask, maps, "rescaled", prompt, image)
            _finite(logits, "the rescaled pass", alpha)
        t4 = t()
        first_probs = _softmax(logits)
        ids: list[int] = []
        token = int(np.argmax(logits))
        no_deepstack = features.deepstack_rows(0, 0, 0, 1)                      # [D, 1, 1, C] zeros, or None
        while token not in self.stop_ids:
            ids.append(token)
            yield token
            if len(ids) >= max_new_tokens:
                break
            logits, cache = self.sessions.decode(token, cache, self._ones, image_mask,
                                                 prompt.decode_positions(cache.length), no_deepstack)
            token = int(np.argmax(_finite(logits, f"the step for generated token {len(ids) + 1}")))
        t5 = t()
        influence = None
        if measure_image_influence:
            influence = self._image_influence(*blank, plain[0])
        return Answer(
            text=self.prompts.decode(ids), token_ids=ids,
            confidence=None if isinstance(steering, ScalingVis) else confidence,
            alpha=None if alpha is None else describe(alpha),
            steering="none" if steering is None else type(steering).__name__.lower(),
            timings=Timings(vision=vision_s, prefill=(t2 - t0) - vision_s,
                            confidence_step=t3 - t2, rescaled_step=t4 - t3, decode=t5 - t4),
            prompt_tokens=n, image_influence=influence, first_token_probs=first_probs, attention=maps)

    def _embeds(self, prompt: Prompt, features: ImageFeatures, end: int | None = None) -> np.ndarray:
        """The prompt's embeddings up to ``end`` [1, end, C], the image features on its image rows."""
        end = len(prompt.ids) if end is None else end
        embeds = self.sessions.embeddings(prompt.ids[:end])                     # [1, end, C]
        last = min(prompt.image_end, end)
        embeds[0, prompt.image_start: last] = features.rows[: last - prompt.image_start]
        return embeds

    @staticmethod
    def _rows(prompt: Prompt, features: ImageFeatures, lo: int, hi: int) -> tuple:
        """The decoder's per-row inputs for prompt rows [lo, hi): positions, DeepStack rows (or None)."""
        return prompt.positions_at(lo, hi), features.deepstack_rows(prompt.image_start, prompt.image_end, lo, hi)

    def _prompt_end(self, tail, cache, scale, image_mask, maps, which: str, prompt: Prompt, image: PreparedImage):
        """The confidence or the rescaled pass over the prompt's last token(s) (``tail``: embeddings, positions,
        DeepStack rows); with ``maps`` (return_attention), also the last row's attention on the image's grid,
        as ``maps[which]``."""
        embeds, positions, deepstack = tail
        if maps is None:
            return self.sessions.step(embeds, cache, scale, image_mask, positions, deepstack)
        logits, after, rows = self.sessions.step_with_attention(embeds, cache, scale, image_mask, positions, deepstack)
        maps[which] = attention_maps(rows, prompt.image_start, self.images.map_grid(image), image.box)
        return logits, after

    def _image_prefix(self, image: PreparedImage, prompt: Prompt, capacity: int):
        """Image features and a new cache (room for ``capacity`` tokens) holding the prompt up to the end of
        the image; the prefix is computed once per image and kept (a snapshot: copied in per question)."""
        end = min(prompt.image_end, len(prompt.ids) - 1)
        key = hashlib.sha1(image.key + prompt.ids[:end].tobytes()).hexdigest()
        with self._lock:
            hit = self._images.get(key)
            if hit is not None:
                self._images.move_to_end(key)
        if hit is not None:
            return hit[0], self.sessions.restore(hit[1], capacity), 0.0, 0.0
        t0 = time.perf_counter()
        features = self.sessions.features(image)                              # rows [T, C]
        t1 = time.perf_counter()
        embeds = self._embeds(prompt, features, end)                            # [1, end, C]
        mask = np.zeros((1, end), dtype=bool)
        mask[0, prompt.image_start: end] = True
        cache = self.sessions.new_cache(capacity)
        try:
            _, cache = self.sessions.step(embeds, cache, self._ones, mask, *self._rows(prompt, features, 0, end))
            snapshot = self.sessions.snapshot(cache)
        except BaseException:
            self.sessions.release(cache)
            raise
        t2 = time.perf_counter()
        with self._lock:
            self._images[key] = (features, snapshot)
            while len(self._images) > _CACHED_IMAGES:
                self._images.popitem(last=False)
        return features, cache, t1 - t0, t2 - t1

    def _image_influence(self, blank: PreparedImage, prompt: Prompt, logits_with_image: np.ndarray) -> ImageInfluence:
        """The unsteered first-token distribution with ``blank`` in place of the image (its own prompt: a
        family whose token count follows the image's size lays it out for the blank's)."""
        features = self.sessions.features(blank)
        embeds = self._embeds(prompt, features)                                 # [1, n, C]
        image_mask = prompt.image_mask[None]                                    # [1, n]
        cache = self.sessions.new_cache(len(prompt.ids))
        try:
            logits, _ = self.sessions.step(embeds, cache, self._ones, image_mask,
                                           *self._rows(prompt, features, 0, len(prompt.ids)))
        finally:
            self.sessions.release(cache)
        _finite(logits, "the blank-image pass (alpha = 1)")
        p, q = _softmax(logits_with_image), _softmax(logits)
        return ImageInfluence(tv_distance=float(0.5 * np.abs(p - q).sum()),
                              answer_changed=int(p.argmax()) != int(q.argmax()),
                              blank_top_token=int(q.argmax()), blank_confidence=float(q.max()))

    def _steering(self, steering):
        if steering is _DEFAULT:
            return self.default_steering
        if steering is None or isinstance(steering, (AdaptVis, ScalingVis)):
            return steering
        raise SteeringError(f"steering must be runtime.AdaptVis(...), runtime.ScalingVis(...) or None, "
                            f"got {type(steering).__name__}")


def calibrated_steering(bundle: Bundle) -> AdaptVis:
    """The AdaptVis of the bundle's calibration.json (written by `just calibrate`), else the paper's defaults."""
    return bundle.calibration.adaptvis if bundle.calibration is not None else PAPER_DEFAULT


def _alphas(steering) -> list:
    if isinstance(steering, AdaptVis):
        return [steering.low, steering.high]
    return [steering.alpha] if isinstance(steering, ScalingVis) else []


def _finite(logits: np.ndarray, where: str, alpha=None) -> np.ndarray:
    """``logits`` if all are finite; else NumericalError: argmax over NaN would answer token 0, silently."""
    if np.isfinite(logits).all():
        return logits
    bad = int(logits.size - np.isfinite(logits).sum())
    steered = alpha is not None and not np.all(np.asarray(alpha) == 1)
    cause = (f" with alpha {brief(alpha)}: try an alpha closer to 1" if steered else
             ": the bundle's weights or its number format (an fp16 overflow?) are at fault")
    raise NumericalError(f"the decoder's logits after {where} hold {bad} NaN or infinite values of {logits.size}"
                         f"{cause}; no answer is given", steered=steered)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()
