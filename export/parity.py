"""Export-time parity: the ONNX graphs in ONNX Runtime against the PyTorch wrappers.

Same weights, same inputs.  The decoder is checked the way the runtime uses it:
for alpha in {0.5, 1, 2} and a random per-layer-per-head scale (which catches a
transposed [layer, head] layout), a prefill of the prompt but its last token,
then three cached single-token steps, comparing logits, every present K/V and
the attention outputs (``last_row_attention``, ``image_attention_share``).
Each side carries its own cache from step to step.

The expected attention is not the wrapper's own output: it is reduced here from the
full softmax matrices [B, H, S, K] that each layer's attention module returns (what
transformers' ``output_attentions=True`` records, taken with forward hooks during the
same reference call), in float64: the last row, the mean over heads, the sum over
image keys.  So the check covers the graph's in-graph slicing, head averaging, masking,
layer order and float32 output, not only its arithmetic.

Two phases keep peak memory near one copy of the weights:

    ReferenceRecorder          PyTorch runs graph by graph, outputs kept (small: one
                               prompt); the exporter frees each part once recorded
    compare_with_onnx(cases)   one ONNX Runtime session at a time; the decoder optionally
                               layer range by layer range (``range_parity``: a session holds
                               only its range's weights, which ORT casts to fp32 on x86)

The reference runs in fp32 (for an fp16 export: on the fp16-rounded weights),
so the difference measures the exported graph's own arithmetic.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from graphs.contracts import ATTENTION_OUTPUTS, decoder_contract
from .errors import ParityError
from .release import trim_heap

FP32_TOLERANCE = 1e-4
# fp16 graphs: logits of a random model reach |10|; fp16 carries ~3 decimal digits.
FP16_TOLERANCE = 5e-2
# The attention outputs are probabilities in [0, 1]: an absolute 1e-5 in fp32 (the tiny models
# reach ~1e-7); fp16 graphs compute the scores in fp16.  --atol scales these by the same factor.
ATTENTION_FP32_TOLERANCE = 1e-5
ATTENTION_FP16_TOLERANCE = 1e-2
ALPHAS = (0.5, 1.0, 2.0)
CACHED_STEPS = 3


@dataclass
class Step:
    context: str                        # "alpha=0.50, cached step 2"
    feeds: dict[str, np.ndarray]        # every input but the past K/V
    expected: list[np.ndarray]          # the graph's outputs, in contract order
    first: bool = False                 # True: start from an empty cache


@dataclass
class Cases:
    graphs: dict[str, list[Step]] = field(default_factory=dict)
    num_layers: int = 0
    kv_shape: tuple = ()                # (1, KV, 0, D): the empty cache


class ReferenceRecorder:
    """Runs the PyTorch side graph by graph, so each part's weights can be freed once recorded.

    Call ``vision``, ``embed`` and ``decoder`` in that order (the decoder's prompt
    holds the recorded image features and embeddings).
    """

    def __init__(self, llava_config, dtype: str, seed: int = 0):
        self.config = llava_config
        self.np_float = np.float16 if dtype == "fp16" else np.float32
        self.gen = torch.Generator().manual_seed(seed)
        text = llava_config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.cases = Cases(num_layers=text.num_hidden_layers, kv_shape=(1, text.num_key_value_heads, 0, head_dim))

    def vision(self, vision) -> None:
        size = self.config.vision_config.image_size
        pixels = torch.randn(1, 3, size, size, generator=self.gen)                  # [1, 3, H, W]
        with torch.no_grad():
            self.features = vision(pixels).float()                                  # [1, T, C]
        self.cases.graphs["vision"] = [Step("a random image", {"pixel_values": pixels.numpy().astype(self.np_float)},
                                            [self.features.numpy()])]

    def embed(self, embed) -> None:
        image_id = self.config.image_token_index
        self.ids = torch.cat([torch.tensor([1]), torch.randint(5, 60, (3,), generator=self.gen),
                              torch.full((self.features.shape[1],), image_id),
                              torch.randint(5, 60, (6,), generator=self.gen)])[None]        # [1, n]
        step_ids = torch.randint(5, 60, (CACHED_STEPS - 1,), generator=self.gen)
        with torch.no_grad():
            embeds = embed(self.ids)                                                 # [1, n, C]
            later = [embed(t.view(1, 1)) for t in step_ids]                          # [1, 1, C] each
        self.cases.graphs["embed"] = [Step("prompt ids", {"input_ids": self.ids.numpy()}, [embeds.float().numpy()])]
        self.embeds = embeds.clone()
        self.embeds[self.ids == image_id] = self.features.reshape(-1, self.features.shape[-1]).to(embeds.dtype)
        self.step_embeds = [self.embeds[:, -1:]] + later

    def decoder(self, decoder) -> None:
        layers, heads = self.cases.num_layers, self.config.text_config.num_attention_heads
        scales = [torch.full((1, layers, heads), a) for a in ALPHAS]
        scales.append(torch.rand(1, layers, heads, generator=self.gen) * 1.5 + 0.5)
        steps = self.cases.graphs["decoder"] = []
        image_mask = self.ids == self.config.image_token_index
        for scale in scales:
            label = f"alpha={scale.flatten()[0].item():.2f}" + ("" if scale.unique().numel() == 1 else " per-layer-head")
            steps += _decoder_reference(decoder, image_mask, self.embeds[:, :-1], self.step_embeds, scale,
                                        self.cases.kv_shape, self.np_float, label)


@contextlib.contextmanager
def fp32_block_by_block(part: torch.nn.Module, big: int = 1 << 20):
    """Run an fp16 ``part`` in fp32 arithmetic without an fp32 copy of all of it.

    Every block of its layer lists (``nn.ModuleList``: the decoder and CLIP layers,
    nearly all the weights), and every other module whose own weights hold ``big`` elements
    or more (the LM head), is upcast for its own forward call only and cast back
    after it (fp16 -> fp32 -> fp16 is exact); the rest (norms, small embeddings) is
    upcast while the ``with`` lasts and cast back when it ends.  Peak: the fp16 part
    plus one fp32 block and the (small) rest.
    """
    blocks = [block for m in part.modules() if isinstance(m, torch.nn.ModuleList) for block in m]
    in_lists = {id(m) for block in blocks for m in block.modules()}
    blocks += [m for m in part.modules() if id(m) not in in_lists and not isinstance(m, torch.nn.ModuleList)
               and sum(t.numel() for t in m._parameters.values() if t is not None) >= big]
    in_blocks = {id(t) for block in blocks for t in (*block.parameters(), *block.buffers())}
    rest = [t for module in part.modules() for tensors in (module._parameters, module._buffers)
            for t in tensors.values() if t is not None and id(t) not in in_blocks and t.is_floating_point()]
    # The fp16 storages are kept and put back, never recast: a cast back would allocate a second fp16
    # copy while the checkpoint's memory-mapped pages stay resident (2x the part, measured on 1b).
    saved: dict[int, list] = {}

    def upcast_tensors(key: int, tensors) -> None:
        saved[key] = [(t, t.data) for t in tensors if t.is_floating_point()]
        for t, data in saved[key]:
            t.data = data.float()

    def restore(key: int) -> None:
        for t, data in saved.pop(key):
            t.data = data

    def upcast(module, args):            # a hook's return value would replace the inputs: return None
        upcast_tensors(id(module), [*module.parameters(), *module.buffers()])

    def downcast(module, args, output):  # ... or the output
        restore(id(module))

    upcast_tensors(id(part), rest)
    hooks = [h for block in blocks
             for h in (block.register_forward_pre_hook(upcast), block.register_forward_hook(downcast))]
    try:
        yield part
    finally:
        for h in hooks:
            h.remove()
        restore(id(part))
        for key in list(saved):           # a forward that raised inside a block
            restore(key)


def reference_cases(wrappers: dict, llava_config, dtype: str, seed: int = 0) -> Cases:
    """All three graphs' PyTorch outputs at once."""
    recorder = ReferenceRecorder(llava_config, dtype, seed)
    for name in ("vision", "embed", "decoder"):
        getattr(recorder, name)(wrappers[name])
    return recorder.cases


def _decoder_reference(decoder, image_mask, prefill, step_embeds, scale, kv_shape, np_float, label) -> list[Step]:
    dtype = torch.float32          # the reference's arithmetic, whatever the export dtype
    n_kv = 2 * len(decoder.model.layers)
    past = [torch.zeros(kv_shape, dtype=dtype) for _ in range(n_kv)]
    full_mask = torch.cat([image_mask, torch.zeros(1, len(step_embeds), dtype=torch.bool)], dim=1)
    steps, done = [], 0
    chunks = [(prefill, "prefill")] + [(e, f"cached step {i + 1}") for i, e in enumerate(step_embeds)]
    for chunk, context in chunks:
        total = done + chunk.shape[1]
        feeds = dict(inputs_embeds=chunk.to(dtype), attention_mask=torch.ones(1, total, dtype=torch.int64),
                     position_ids=torch.arange(done, total)[None], image_attention_scale=scale,
                     image_token_mask=full_mask[:, :total])
        with torch.no_grad(), _last_rows(decoder) as rows:
            out = decoder(feeds["inputs_embeds"], feeds["attention_mask"], feeds["position_ids"], past,
                          scale, feeds["image_token_mask"])
        np_feeds = {k: v.numpy() for k, v in feeds.items()}
        np_feeds["inputs_embeds"] = np_feeds["inputs_embeds"].astype(np_float)
        expected = [t.float().numpy() for t in out[: 1 + n_kv]]                  # logits, present K/V
        expected += _expected_attention(rows, feeds["image_token_mask"])        # from the hooks, not from out
        steps.append(Step(f"{label}, {context}", np_feeds, expected, first=done == 0))
        past, done = list(out[1: 1 + n_kv]), total
    return steps


@contextlib.contextmanager
def _last_rows(decoder):
    """Forward hooks on every decoder layer's attention module: the last query row of the softmax
    matrix [B, H, S, K] it returns (as ``output_attentions=True`` records it), mean over heads,
    in float64 -> a list of [B, K] per layer.  Reduced at once: the full matrices are never kept."""
    layers = decoder.model.layers
    rows: list = [None] * len(layers)

    def recorder(i):
        def record(module, args, output):
            rows[i] = output[1][:, :, -1, :].double().mean(dim=1)                # [B, K]
        return record

    handles = [layer.self_attn.register_forward_hook(recorder(i)) for i, layer in enumerate(layers)]
    try:
        yield rows
    finally:
        for h in handles:
            h.remove()


def _expected_attention(rows: list, image_token_mask: torch.Tensor) -> list[np.ndarray]:
    """[last_row_attention [B, L, K], image_attention_share [B, L]] as float32, from the hooks' rows."""
    last = torch.stack(rows, dim=1)                                             # [B, L, K] float64
    share = (last * image_token_mask[:, None, :].double()).sum(dim=-1)          # [B, L]
    return [last.float().numpy(), share.float().numpy()]


def compare_with_onnx(folder: Path, cases: Cases, dtype: str, tolerance: float | None = None,
                      phase=None, decoder_range_bytes: int | None = None, decoder_range_layers: int | None = None,
                      log=None) -> dict[str, float]:
    """Returns {graph: max |diff|}; raises ParityError naming the output that differs.

    The decoder is checked whole in one session, or, given ``decoder_range_bytes`` (the fp32 bytes
    of a range's weights) or ``decoder_range_layers``, layer range by layer range, one session per
    range (``export/range_parity.py``: same reference, tolerances and keys).
    ``phase``: ``name -> context manager`` wrapped around each graph's check (``MemoryLog.phase``)."""
    from .range_parity import compare_decoder_by_ranges

    judge = Judge(dtype, tolerance)
    phase = phase or (lambda name: contextlib.nullcontext())
    by_ranges = decoder_range_bytes is not None or decoder_range_layers is not None
    for graph, steps in cases.graphs.items():
        path = Path(folder) / f"{graph}.onnx"
        if graph == "decoder" and by_ranges:
            compare_decoder_by_ranges(path, steps, cases, judge, max_bytes=decoder_range_bytes,
                                      layers=decoder_range_layers, phase=phase, log=log)
        else:
            with phase(f"parity {graph}"):
                _compare_graph(path, graph, steps, cases, judge)
        trim_heap()
    return judge.worst


class Judge:
    """The tolerances of one export, and the largest difference seen per manifest key."""

    def __init__(self, dtype: str, tolerance: float | None = None):
        default = FP16_TOLERANCE if dtype == "fp16" else FP32_TOLERANCE
        self.dtype = dtype
        self.np_float = np.float16 if dtype == "fp16" else np.float32
        self.tolerance = tolerance or default
        self.attention_tolerance = (ATTENTION_FP16_TOLERANCE if dtype == "fp16" else ATTENTION_FP32_TOLERANCE) \
            * self.tolerance / default
        self.worst: dict[str, float] = {}

    def check(self, graph: str, name: str, got: np.ndarray, want: np.ndarray, context: str) -> None:
        """Records the difference of output ``name``; raises ParityError beyond the tolerance."""
        key, diff = _difference(graph, name, got, want)
        self.worst[key] = max(self.worst.get(key, 0.0), diff)
        limit = self.attention_tolerance if name in ATTENTION_OUTPUTS else self.tolerance
        if not diff <= limit:     # also catches NaN
            raise ParityError(f"{graph} graph output {name!r} differs from PyTorch by {diff:.3g} "
                              f"(tolerance {limit:g}, {self.dtype}) in {context}; if that is the "
                              f"{self.dtype} rounding of a deep model, re-export with a larger --atol")


def _compare_graph(path: Path, graph: str, steps: list[Step], cases: Cases, judge: Judge) -> None:
    """The whole graph in one ONNX Runtime session, step by step (the decoder carrying its K/V cache)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past_names = decoder_contract(cases.num_layers).input_names[3:-2] if graph == "decoder" else []
    past: list[np.ndarray] = []
    for step in steps:
        if step.first:
            past = [np.zeros(cases.kv_shape, dtype=judge.np_float) for _ in past_names]
        got = session.run(names, {**step.feeds, **dict(zip(past_names, past))})
        for name, g, want in zip(names, got, step.expected):
            judge.check(graph, name, g, want, step.context)
        past = got[1: 1 + len(past_names)]
    del session


def _difference(graph: str, name: str, got: np.ndarray, want: np.ndarray) -> tuple[str, float]:
    """(manifest key, difference). Logits, features, embeddings, attention: absolute |diff|
    (the attention outputs under their own key, ``decoder.attention``).

    The K/V cache is compared relative to its largest magnitude (keys of a 22-layer model
    reach |50|): a cache error that matters shows up in the next step's logits anyway.
    """
    diff = float(np.max(np.abs(got.astype(np.float32) - want))) if got.size else 0.0
    if name.startswith("present."):
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        return f"{graph}.present_relative", diff / scale
    if name in ATTENTION_OUTPUTS:
        return f"{graph}.attention", diff
    return graph, diff


def check_parity(folder: Path, wrappers: dict, llava_config, dtype: str, seed: int = 0) -> dict[str, float]:
    """Both phases at once, for callers that keep the PyTorch model anyway (tests)."""
    return compare_with_onnx(folder, reference_cases(wrappers, llava_config, dtype, seed), dtype)
