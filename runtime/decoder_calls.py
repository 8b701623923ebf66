"""The decoder calls every family's sessions answer (``runtime/sessions.py``, ``runtime/qwen_vl/sessions.py``),
on whichever decoder runs them (``self.runner``: the standard decoder or the fused pair).

    new_cache(capacity) -> cache        step(embeds, cache, scale, image_mask, positions, deepstack)
    snapshot / restore / release        decode(token, cache, ones, image_mask, positions, deepstack)

``positions`` are the decoder's position_ids for the call (``Prompt.positions_at`` / ``decode_positions``:
M-RoPE's [3, 1, S]; None: the cache positions, counted by the decoder); ``deepstack`` the DeepStack rows
[D, 1, S, C] where the graph takes them.  Neither is passed on when None (a LLaVA call is as it always was).
"""
from __future__ import annotations

import numpy as np


class DecoderCalls:
    runner = None       # StandardDecoder or FusedDecoder, set by the sessions

    def new_cache(self, capacity: int):
        """An empty cache with room for ``capacity`` tokens (the fused pair: KV buffers from its pool)."""
        return self.runner.new_cache(capacity)

    def release(self, cache) -> None:
        self.runner.release(cache)

    def snapshot(self, cache):
        """What a cache holds, kept apart from it (the image prefix across answers)."""
        return self.runner.snapshot(cache)

    def restore(self, snapshot, capacity: int):
        """A cache with room for ``capacity`` tokens that starts with ``snapshot``."""
        return self.runner.restore(snapshot, capacity)

    def step(self, embeds: np.ndarray, cache, scale: np.ndarray, image_mask: np.ndarray, positions=None,
             deepstack=None):
        """Run the decoder on ``embeds`` [1, S, C] after ``cache``; returns (logits [V] float32, new cache).

        ``scale`` [1, L, H] multiplies the image-key logits of these S query rows;
        ``image_mask`` [1, cache.length + S] marks image-token keys.
        """
        logits, new_cache, _ = self.runner.step(embeds, cache, scale, image_mask, False,
                                                **_extra(positions, deepstack))
        return logits, new_cache

    def step_with_attention(self, embeds: np.ndarray, cache, scale: np.ndarray, image_mask: np.ndarray,
                            positions=None, deepstack=None):
        """``step``, also returning the attention of its last query row (the last of ``embeds``).

        Raises ``BundleError`` for a bundle exported before the decoder had attention outputs.
        """
        self.require_attention_outputs()
        return self.runner.step(embeds, cache, scale, image_mask, True, **_extra(positions, deepstack))

    def decode(self, token: int, cache, ones: np.ndarray, image_mask: np.ndarray, positions=None, deepstack=None):
        """One generated token (alpha 1): (logits [V] float32, the cache one longer)."""
        return self.runner.decode(token, cache, ones, image_mask, **_extra(positions, deepstack))

    def require_attention_outputs(self) -> None:
        raise NotImplementedError


def _extra(positions, deepstack) -> dict:
    return {k: v for k, v in (("positions", positions), ("deepstack", deepstack)) if v is not None}
