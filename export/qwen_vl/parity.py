"""Export-time parity of the Qwen graphs: ONNX Runtime against PyTorch, tolerances by the model's own fp32 rounding.

    vision   ONE session, several grids (square, wide, tall): the graph fed by
             ``runtime.qwen_vl.vision_feeds`` against transformers' own tower ``model.model.visual(pixels, grid)``
             (image features, and each DeepStack feature for Qwen3-VL)
    embed    the gather against the embedding table (exact)
    decoder  against ``export.qwen_reference.QwenReference`` (transformers' eager attention, AdaptVis patch)
             for plain, alpha 0.5, alpha 2, a per-layer-head alpha and alpha 2 on the rows after the image:
                 call 1  the prompt up to the steered rows, alpha 1, empty cache
                 call 2  the steered rows, alpha, call 1's cache       vs the reference's prefill logits
                 call 3  one decode step (positions continued with the rope delta), alpha 1
                                                                       vs the reference's second-step logits
             and the cache after call 3 against the reference's; the call-2 attention read-out against
             the reference's attention probabilities (last row, mean over heads).

Tolerances (``export/tolerance.py``'s rule): noise = max |wrapper fp32 - wrapper float64| over the same
cases (the wrapper: the exported torch module, run again in float64 one block at a time), limit =
8 x noise, at least 16 fp32 ulps of the output's magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from runtime.qwen_vl.merge import deepstack_rows, scatter_image_rows
from runtime.qwen_vl.positions import VisionTokens, decode_positions, rope_index
from runtime.qwen_vl.vision_feeds import VisionSpec, vision_feeds

from ..errors import ParityError
from ..tolerance import Tolerances, tolerances
from ..upcast import float64_run

# (t, h, w) in patches: square, wide, tall; one session serves them all
VISION_GRIDS = ((1, 4, 4), (1, 6, 10), (1, 12, 8))
ALPHAS = (("plain", None, "last_token"), ("alpha=0.5", 0.5, "last_token"), ("alpha=2", 2.0, "last_token"),
          ("per-layer-head", "per-layer-head", "last_token"), ("alpha=2 after image", 2.0, "after_image"))
QUESTION = "Where is the mug in relation to the plate?"


@dataclass
class Measured:
    """Per manifest key: ONNX's largest distance from the reference, the wrapper's fp32-vs-float64 noise,
    the output's largest magnitude."""
    worst: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    magnitude: dict[str, float] = field(default_factory=dict)
    wrapper: dict[str, float] = field(default_factory=dict)    # the wrapper fp32 vs the reference (for the record)

    def add(self, key: str, onnx, reference, wrapper32=None, wrapper64=None, relative: bool = False) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        scale = max(1.0, float(np.abs(ref).max(initial=0.0))) if relative else 1.0
        _max(self.worst, key, np.abs(np.asarray(onnx, np.float64) - ref).max(initial=0.0) / scale)
        _max(self.magnitude, key, 1.0 if relative else float(np.abs(ref).max(initial=0.0)))
        if wrapper32 is not None:
            _max(self.wrapper, key, np.abs(np.asarray(wrapper32, np.float64) - ref).max(initial=0.0) / scale)
        if wrapper64 is not None:
            _max(self.noise, key, np.abs(np.asarray(wrapper32, np.float64) - wrapper64).max(initial=0.0) / scale)


def _max(d: dict, key: str, value: float) -> None:
    d[key] = max(d.get(key, 0.0), float(value))


def check(measured: Measured, depth: dict[str, int], atol: float | None = None) -> Tolerances:
    """The tolerances; ``ParityError`` listing every key over its limit."""
    keys = sorted(measured.worst)
    limits = tolerances(keys, "fp32", measured.noise, measured.magnitude, depth, atol)
    bad = [f"{k}: {measured.worst[k]:.3g} > {limits.explain(k)}" for k in keys if measured.worst[k] > limits.limits[k]]
    if bad:
        raise ParityError("ONNX Runtime differs from PyTorch: " + "; ".join(bad))
    return limits


def vision_parity(model, wrapper, session, spec: VisionSpec, measured: Measured, grids=VISION_GRIDS, seed: int = 0):
    """The vision graph on each grid against transformers' tower (and the wrapper in float64 for the noise)."""
    v = model.config.vision_config
    dim = v.in_channels * v.temporal_patch_size * v.patch_size ** 2
    rng = np.random.default_rng(seed)
    for grid in grids:
        pixels = rng.standard_normal((int(np.prod(grid)), dim)).astype(np.float32)      # [N, CTPP]
        feeds = vision_feeds(pixels, grid, spec)
        got = session.run(None, feeds)
        torch_feeds = [torch.from_numpy(np.ascontiguousarray(x)) for x in feeds.values()]
        with torch.no_grad():
            stock = model.model.visual(torch.from_numpy(pixels), torch.tensor([grid]))
            ours = _tuple(wrapper(*torch_feeds))
            with float64_run(wrapper):
                wide = _tuple(wrapper(*[t.double() if t.is_floating_point() else t for t in torch_feeds]))
        stock = (stock[0], torch.stack(list(stock[1]))) if isinstance(stock, tuple) else (stock,)
        for key, g, s, o, w in zip(("vision", "vision.deepstack"), got, stock, ours, wide):
            measured.add(key, g, s.numpy(), o.numpy(), w.numpy())


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def embed_parity(wrapper, session, ids: np.ndarray, measured: Measured) -> None:
    with torch.no_grad():
        want = wrapper(torch.from_numpy(ids)).numpy()
    measured.add("embed", session.run(None, {"input_ids": ids})[0], want, want, want.astype(np.float64))


def decoder_parity(reference, model, decoder, embed_session, decoder_session, contract, image, measured: Measured,
                   seed: int = 0) -> None:
    """Every case of ``ALPHAS`` on one image: the three calls through ONNX Runtime and the wrapper (fp32 and
    float64), against the reference's prefill and decode-step logits, cache and attention."""
    inputs = reference.inputs(image, QUESTION)
    config = model.config
    ids = inputs["input_ids"].numpy()                                              # [1, S]
    grid = inputs["image_grid_thw"].numpy()                                        # [1, 3]
    image_rows = ids == config.image_token_id                                      # [1, S]
    with torch.no_grad():
        stock = model.model.visual(inputs["pixel_values"], inputs["image_grid_thw"])
    features, deepstack = (stock[0], torch.stack(list(stock[1])).numpy()) if isinstance(stock, tuple) else (stock, None)
    embeds = scatter_image_rows(embed_session.run(None, {"input_ids": ids})[0], image_rows, features.numpy())
    stack = deepstack_rows(image_rows, deepstack) if deepstack is not None else None
    positions, delta = rope_index(ids, grid, VisionTokens.from_config(config.to_dict()),
                                  config.vision_config.spatial_merge_size)
    layers, heads = reference.layers, reference.heads
    text = config.text_config
    kv = (text.num_key_value_heads, getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    rng = np.random.default_rng(seed)
    for label, alpha, rows in ALPHAS:
        if isinstance(alpha, str):
            alpha = (rng.random((layers, heads)) * 1.5 + 0.5).astype(np.float32)
        want = _reference_run(reference, inputs, alpha, rows)
        first = ids.shape[1] - 1 if rows == "last_token" else int(np.flatnonzero(image_rows[0]).max()) + 1
        calls = _calls(embeds, positions, delta, image_rows, stack, first, alpha, want["token"], embed_session,
                       layers, heads)
        onnx_out = _run_calls(calls, lambda feeds: decoder_session.run(None, feeds), contract, np.float32, kv)
        with torch.no_grad():
            ours = _run_calls(calls, _torch_runner(decoder, contract, torch.float32), contract, np.float32, kv)
            with float64_run(decoder):
                wide = _run_calls(calls, _torch_runner(decoder, contract, torch.float64), contract, np.float64, kv)
        for key, name in (("decoder", "prefill_logits"), ("decoder", "step_logits")):
            measured.add(key, onnx_out[name], want[name], ours[name], wide[name])
        for i, (k, v) in enumerate(want["cache"]):
            for kind, tensor in (("key", k), ("value", v)):
                name = f"present.{i}.{kind}"
                measured.add("decoder.present_relative", onnx_out[name], tensor, ours[name], wide[name], relative=True)
        measured.add("decoder.attention", onnx_out["attention"], want["attention"], ours["attention"], wide["attention"])


def _reference_run(reference, inputs, alpha, rows) -> dict:
    """The reference's prefill logits, attention (last row, mean over heads), first token, second-step
    logits and the cache after that step."""
    ids = inputs["input_ids"][0]
    with reference.steered(ids, alpha, rows), torch.no_grad():
        # min_new_tokens: a second step even where the first token is a stop token (the raw logits, which
        # output_logits returns, are untouched by the stop-token suppression; the token fed is what it picked)
        out = reference.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True, pad_token_id=reference.tokenizer.pad_token_id)
        attentions = reference.model(**inputs, output_attentions=True).attentions
    cache = out.past_key_values
    kv = [(layer.keys.numpy(), layer.values.numpy()) for layer in cache.layers] if hasattr(cache, "layers") \
        else [(k.numpy(), v.numpy()) for k, v in cache]
    attention = np.stack([a[0, :, -1, :].double().mean(0).numpy() for a in attentions])[None]   # [1, L, S]
    return {"prefill_logits": out.logits[0].numpy(), "step_logits": out.logits[1].numpy(),
            "token": int(out.sequences[0, ids.shape[0]]), "cache": kv, "attention": attention}


def _calls(embeds, positions, delta, image_rows, stack, first, alpha, token, embed_session, layers, heads):
    """The decoder's three calls' feeds (without the past): rows [0, first), rows [first, S) steered, one step."""
    length = embeds.shape[1]
    ones = np.ones((1, layers, heads), np.float32)
    scale = ones if alpha is None else np.broadcast_to(np.asarray(alpha, np.float32).reshape(
        (1, layers, 1) if np.ndim(alpha) == 1 else (1, layers, heads) if np.ndim(alpha) == 2 else (1, 1, 1)),
        (1, layers, heads)).astype(np.float32)
    step_embed = embed_session.run(None, {"input_ids": np.array([[token]], np.int64)})[0]      # [1, 1, C]
    rows_after = np.concatenate([image_rows, np.zeros((1, 1), bool)], axis=1)                  # [1, S + 1]
    calls = []
    for lo, hi, s in ((0, first, ones), (first, length, scale)):
        feeds = {"inputs_embeds": embeds[:, lo:hi], "attention_mask": np.ones((1, hi), np.int64),
                 "position_ids": np.ascontiguousarray(positions[:, :, lo:hi]), "image_attention_scale": s,
                 "image_token_mask": image_rows[:, :hi]}
        if stack is not None:
            feeds["deepstack_embeds"] = np.ascontiguousarray(stack[:, :, lo:hi])
        calls.append(feeds)
    step = {"inputs_embeds": step_embed, "attention_mask": np.ones((1, length + 1), np.int64),
            "position_ids": decode_positions(delta, length), "image_attention_scale": ones,
            "image_token_mask": rows_after}
    if stack is not None:
        step["deepstack_embeds"] = np.zeros((stack.shape[0], 1, 1, stack.shape[-1]), stack.dtype)
    calls.append(step)
    return calls


def _run_calls(calls, run, contract, np_float, kv: tuple[int, int]) -> dict:
    """The three calls, each fed the previous one's present K/V; the outputs the check needs, by name."""
    past_names = [t.name for t in contract.inputs if t.role.startswith("past_")]
    present_names = [t.name for t in contract.outputs if t.role.startswith("present_")]
    past = [np.zeros((1, kv[0], 0, kv[1]), np_float)] * len(past_names)      # the empty cache
    results = []
    for feeds in calls:
        feeds = {**{k: (v.astype(np_float) if v.dtype.kind == "f" else v) for k, v in feeds.items()},
                 **dict(zip(past_names, past))}
        out = dict(zip(contract.output_names, run(feeds)))
        past = [out[n] for n in present_names]
        results.append(out)
    final = {n: results[2][n] for n in present_names}
    return {"prefill_logits": results[1]["logits"][0], "step_logits": results[2]["logits"][0],
            "attention": results[1]["last_row_attention"], **final}


def _torch_runner(decoder, contract, dtype):
    names = contract.input_names

    def run(feeds):
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
        args = [a.to(dtype) if a.is_floating_point() and n != "image_attention_scale" else a
                for a, n in zip(args, names)]
        return [o.numpy() for o in decoder(*args)]
    return run
