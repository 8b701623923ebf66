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

The reference runs in fp32 (for an fp16 export: on the fp16-rounded weights, one block upcast at
a time), so the difference measures the exported graph's own arithmetic.  The recorder runs each
part a second time to scale the tolerances (``export/tolerance.py``): an fp32 export in float64
(one layer at a time, ``export/upcast.py``: how far PyTorch fp32 is from exact arithmetic; where
that run does not fit in memory, the tolerances follow the outputs' magnitude and the depth
instead), an fp16 export in PyTorch fp16 (``export/half_run.py``: how far the model's own fp16
rounding takes it from the fp32 reference).  That second run is compared step by step, as it goes.

What is kept of the reference: each step's outputs, the present K/V as the step's new positions
only (a step's cache is the previous step's and its new positions: ``whole_outputs`` puts it
together again when a check needs it).  A 7B decoder's full cache per step, kept for every step of
every case, was ~10 GB; its new positions are ~0.6 GB a case.  Models above
``ALL_CASES_MAX_PARAMETERS`` run the per-layer-head case only (``cases="per-layer-head"``): the
small fixtures cover the case matrix, and each case at full size is a whole prefill per float type.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from graphs.contracts import ATTENTION_OUTPUTS, bundle_contracts, decoder_contract
from .errors import ParityError
from .release import trim_heap
from .settings import CASE_SETS
from .half_run import fp16_run
from .tolerance import Tolerances, tolerances
from .upcast import float64_run, fp32_block_by_block, fp64_fits

ALPHAS = (0.5, 1.0, 2.0)
CACHED_STEPS = 3
# Above this many parameters an export checks the per-layer-head case only, unless told otherwise
# (a 7B prefill is ~1 min of reference per float type on 2 cores; the fixtures run every case).
ALL_CASES_MAX_PARAMETERS = 3_000_000_000


@dataclass
class Step:
    context: str                        # "alpha=0.50, cached step 2"
    feeds: dict[str, np.ndarray]        # every input but the past K/V
    expected: list[np.ndarray]          # the graph's outputs, in contract order; each present K/V
                                        # [1, KV, new, D]: this step's new positions (whole_outputs)
    first: bool = False                 # True: start from an empty cache


@dataclass
class Cases:
    graphs: dict[str, list[Step]] = field(default_factory=dict)
    num_layers: int = 0
    kv_shape: tuple = ()                # (1, KV, 0, D): the empty cache
    # per manifest key: the reference's distance from its second run (fp32 export: PyTorch fp32 from
    # float64; fp16 export: PyTorch fp16 from the fp32 reference; keys measured only), the largest
    # |output|, and the layers the output passed through (see export/tolerance.py)
    noise: dict[str, float] = field(default_factory=dict)
    magnitude: dict[str, float] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)


class ReferenceRecorder:
    """Runs the PyTorch side graph by graph, so each part's weights can be freed once recorded.

    Call ``vision``, ``embed`` and ``decoder`` in that order (the decoder's prompt
    holds the recorded image features and embeddings).  ``measure_noise``: run each part again, for
    the tolerances: fp32, in float64 where that fits in memory; fp16, in PyTorch fp16.
    ``cases``: "all" (alpha 0.5, 1, 2 and a per-layer-head scale) or "per-layer-head" (that one only).
    """

    def __init__(self, llava_config, dtype: str, seed: int = 0, measure_noise: bool = True, cases: str = "all"):
        if cases not in CASE_SETS:
            raise ValueError(f"cases must be one of {', '.join(CASE_SETS)}, got {cases!r}")
        self.config = llava_config
        self.dtype = dtype
        self.np_float = np.float16 if dtype == "fp16" else np.float32
        self.measure_noise = measure_noise
        self.case_set = cases
        self.gen = torch.Generator().manual_seed(seed)
        text = llava_config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.cases = Cases(num_layers=text.num_hidden_layers, kv_shape=(1, text.num_key_value_heads, 0, head_dim))

    def vision(self, vision) -> None:
        size = self.config.vision_config.image_size
        pixels = torch.randn(1, 3, size, size, generator=self.gen)                  # [1, 3, H, W]
        with torch.no_grad(), self._reference(vision):
            self.features = vision(pixels).float()                                  # [1, T, C]
        self._record("vision", [Step("a random image", {"pixel_values": pixels.numpy().astype(self.np_float)},
                                     [self.features.numpy()])], depth=len(vision.layers) + 2)
        if self._exact(vision):
            with torch.no_grad(), float64_run(vision):
                self._noise("vision", self.cases.graphs["vision"], [[vision(pixels.double()).numpy()]])
        elif self._half(vision):
            with torch.no_grad(), fp16_run(vision):
                self._noise("vision", self.cases.graphs["vision"], [[vision(pixels.half()).float().numpy()]])

    def embed(self, embed) -> None:
        image_id = self.config.image_token_index
        self.ids = torch.cat([torch.tensor([1]), torch.randint(5, 60, (3,), generator=self.gen),
                              torch.full((self.features.shape[1],), image_id),
                              torch.randint(5, 60, (6,), generator=self.gen)])[None]        # [1, n]
        step_ids = torch.randint(5, 60, (CACHED_STEPS - 1,), generator=self.gen)
        with torch.no_grad():
            embeds = embed(self.ids)                                                 # [1, n, C]
            later = [embed(t.view(1, 1)) for t in step_ids]                          # [1, 1, C] each
        self._record("embed", [Step("prompt ids", {"input_ids": self.ids.numpy()}, [embeds.float().numpy()])], depth=1)
        self.cases.noise["embed"] = 0.0          # a gather: exact in any float type
        self.embeds = embeds.clone()
        self.embeds[self.ids == image_id] = self.features.reshape(-1, self.features.shape[-1]).to(embeds.dtype)
        self.step_embeds = [self.embeds[:, -1:]] + later

    def decoder(self, decoder) -> None:
        layers, heads = self.cases.num_layers, self.config.text_config.num_attention_heads
        scales = [torch.full((1, layers, heads), a) for a in ALPHAS]
        scales.append(torch.rand(1, layers, heads, generator=self.gen) * 1.5 + 0.5)
        if self.case_set == "per-layer-head":
            scales = scales[-1:]
        image_mask = self.ids == self.config.image_token_index
        runs = [(scale, f"alpha={scale.flatten()[0].item():.2f}" + ("" if scale.unique().numel() == 1
                                                                       else " per-layer-head")) for scale in scales]
        steps = []
        with self._reference(decoder):
            for scale, label in runs:
                steps += [Step(f"{label}, {context}", _np_feeds(feeds, self.np_float), out, first=k == 0)
                          for k, (context, feeds, out) in enumerate(_decoder_run(
                              decoder, image_mask, self.embeds[:, :-1], self.step_embeds, scale,
                              self.cases.kv_shape, torch.float32))]
        self._record("decoder", steps, depth=layers)
        second = (float64_run(decoder), torch.float64) if self._exact(decoder) else \
            (fp16_run(decoder), torch.float16) if self._half(decoder) else None
        if second:
            with second[0]:      # step by step: one step's outputs of the second run held at a time
                self._noise("decoder", steps, (out for scale, _ in runs for _, _, out in _decoder_run(
                    decoder, image_mask, self.embeds[:, :-1], self.step_embeds, scale, self.cases.kv_shape,
                    second[1])))

    def _reference(self, part):
        """fp16: the part computes in float32, one block upcast at a time; fp32: as it is."""
        return fp32_block_by_block(part) if self.dtype == "fp16" else contextlib.nullcontext()

    def _exact(self, part) -> bool:
        return self.measure_noise and self.dtype == "fp32" and fp64_fits(part)

    def _half(self, part) -> bool:
        return self.measure_noise and self.dtype == "fp16"

    def _record(self, graph: str, steps: list[Step], depth: int) -> None:
        self.cases.graphs[graph] = steps
        names = _output_names(graph, self.cases.num_layers)
        for step in steps:
            for name, want in zip(names, step.expected):
                key = _key(graph, name)
                mag = 1.0 if name.startswith("present.") else float(np.max(np.abs(want), initial=0.0))
                self.cases.magnitude[key] = max(self.cases.magnitude.get(key, 0.0), mag)
                self.cases.depth[key] = depth

    def _noise(self, graph: str, steps: list[Step], second) -> None:
        """The recorded reference against the second run's outputs (float64, or PyTorch fp16), step by
        step, in the parity check's own measure.  A step's K/V cache is compared without putting it
        together: its past positions are the previous step's (both runs carry their own), so the whole
        cache's largest difference and magnitude are the running maxima over the new positions."""
        names = _output_names(graph, self.cases.num_layers)
        running: dict[str, tuple[float, float]] = {}     # present name -> (largest |diff|, largest |want|)
        for step, outputs in zip(steps, second, strict=True):
            if step.first:
                running.clear()
            for name, want, got in zip(names, step.expected, outputs, strict=True):
                if name.startswith("present."):
                    diff, scale = running.get(name, (0.0, 0.0))
                    if want.size:
                        diff = max(diff, float(np.max(np.abs(got.astype(np.float32) - want))))
                        scale = max(scale, float(np.max(np.abs(want))))
                    running[name] = (diff, scale)
                    key, diff = _key(graph, name), diff / max(1.0, scale)
                else:
                    key, diff = _difference(graph, name, got, want)
                self.cases.noise[key] = max(self.cases.noise.get(key, 0.0), diff)


def _output_names(graph: str, num_layers: int) -> list[str]:
    return bundle_contracts(num_layers)[graph].output_names


def whole_outputs(step: Step, names: list[str], running: dict, only=None) -> dict[str, np.ndarray]:
    """``step``'s expected outputs by name, each present K/V whole: ``running``'s (the previous step's
    of the same case, per name; emptied at a case's first step) followed by the step's new positions.
    ``only``: the names wanted (the others are neither returned nor carried)."""
    if step.first:
        running.clear()
    out = {}
    for name, want in zip(names, step.expected):
        if only is not None and name not in only:
            continue
        if name.startswith("present."):
            if name in running:
                want = np.concatenate([running[name], want], axis=2)           # [1, KV, past + new, D]
            running[name] = want
        out[name] = want
    return out


def reference_cases(wrappers: dict, llava_config, dtype: str, seed: int = 0, measure_noise: bool = True,
                    cases: str = "all") -> Cases:
    """All three graphs' PyTorch outputs at once."""
    recorder = ReferenceRecorder(llava_config, dtype, seed, measure_noise, cases)
    for name in ("vision", "embed", "decoder"):
        getattr(recorder, name)(wrappers[name])
    return recorder.cases


def _decoder_run(decoder, image_mask, prefill, step_embeds, scale, kv_shape, dtype):
    """The prefill, then each cached step, in ``dtype`` arithmetic, carrying the decoder's own cache.

    Yields (context, torch feeds, outputs in contract order as numpy: float32, or float64 for a
    float64 run; each present K/V the step's new positions only, ``whole_outputs``).  The attention
    outputs are reduced from the hooks' rows, not taken from the outputs; in an fp16 run (PyTorch's
    own fp16 rounding, for the tolerances) they are the decoder's own, as the graph computes them."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    n_kv = 2 * len(decoder.model.layers)
    past = [torch.zeros(kv_shape, dtype=dtype) for _ in range(n_kv)]
    full_mask = torch.cat([image_mask, torch.zeros(1, len(step_embeds), dtype=torch.bool)], dim=1)
    done = 0
    chunks = [(prefill, "prefill")] + [(e, f"cached step {i + 1}") for i, e in enumerate(step_embeds)]
    for chunk, context in chunks:
        total = done + chunk.shape[1]
        feeds = dict(inputs_embeds=chunk.to(dtype), attention_mask=torch.ones(1, total, dtype=torch.int64),
                     position_ids=torch.arange(done, total)[None], image_attention_scale=scale,
                     image_token_mask=full_mask[:, :total])
        with torch.no_grad(), _last_rows(decoder) as rows:
            out = decoder(feeds["inputs_embeds"], feeds["attention_mask"], feeds["position_ids"], past,
                          scale.to(wide), feeds["image_token_mask"])
        outputs = [out[0].to(wide).numpy()]                                      # logits [1, V]
        outputs += [t[:, :, done:].to(wide).contiguous().numpy() for t in out[1: 1 + n_kv]]   # [1, KV, new, D]
        attention = out[1 + n_kv:] if dtype == torch.float16 else _expected_attention(rows, feeds["image_token_mask"])
        outputs += [t.to(wide).numpy() for t in attention]
        yield context, feeds, outputs
        past, done = list(out[1: 1 + n_kv]), total


def _np_feeds(feeds: dict, np_float) -> dict[str, np.ndarray]:
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    np_feeds["inputs_embeds"] = np_feeds["inputs_embeds"].astype(np_float)
    return np_feeds


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


def _expected_attention(rows: list, image_token_mask: torch.Tensor) -> list[torch.Tensor]:
    """[last_row_attention [B, L, K], image_attention_share [B, L]] in float64, from the hooks' rows."""
    last = torch.stack(rows, dim=1)                                             # [B, L, K] float64
    share = (last * image_token_mask[:, None, :].double()).sum(dim=-1)          # [B, L]
    return [last, share]


@dataclass(frozen=True)
class ParityResult:
    worst: dict[str, float]             # manifest key -> the largest difference seen
    tolerances: Tolerances


def compare_with_onnx(folder: Path, cases: Cases, dtype: str, atol: float | None = None,
                      phase=None, decoder_range_bytes: int | None = None, decoder_range_layers: int | None = None,
                      log=None) -> ParityResult:
    """The largest difference per manifest key and the tolerances held to; raises ParityError
    naming the output that differs.  ``atol``: no tolerance below it (``export/tolerance.py``).

    The decoder is checked whole in one session, or, given ``decoder_range_bytes`` (the fp32 bytes
    of a range's weights) or ``decoder_range_layers``, layer range by layer range, one session per
    range (``export/range_parity.py``: same reference, tolerances and keys).
    ``phase``: ``name -> context manager`` wrapped around each graph's check (``MemoryLog.phase``)."""
    from .range_parity import compare_decoder_by_ranges

    judge = Judge(dtype, cases, atol)
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
    return ParityResult(judge.worst, judge.tolerances)


class Judge:
    """The tolerances of one export, and the largest difference seen per manifest key."""

    def __init__(self, dtype: str, cases: Cases, atol: float | None = None):
        self.dtype = dtype
        self.np_float = np.float16 if dtype == "fp16" else np.float32
        keys = [k for graph in cases.graphs for k in _keys(graph)]
        self.tolerances = tolerances(keys, dtype, cases.noise, cases.magnitude, cases.depth, atol)
        self.worst: dict[str, float] = {}

    def check(self, graph: str, name: str, got: np.ndarray, want: np.ndarray, context: str) -> None:
        """Records the difference of output ``name``; raises ParityError beyond the tolerance."""
        key, diff = _difference(graph, name, got, want)
        self.worst[key] = max(self.worst.get(key, 0.0), diff)
        limit = self.tolerances.limits[key]
        if not diff <= limit:     # also catches NaN
            times = f"{diff / limit:.3g}x the tolerance" if np.isfinite(diff) else "not a number"
            raise ParityError(f"{graph} graph output {name!r} differs from PyTorch by {diff:.3g} "
                              f"({times}) in {context}; {self.tolerances.explain(key)}. A difference "
                              f"far beyond the tolerance is a defect in the graph, not rounding; "
                              f"--atol raises the tolerance")


def _keys(graph: str) -> list[str]:
    """The manifest keys a graph's check records."""
    return [graph, f"{graph}.present_relative", f"{graph}.attention"] if graph == "decoder" else [graph]


def _key(graph: str, name: str) -> str:
    if name.startswith("present."):
        return f"{graph}.present_relative"
    return f"{graph}.attention" if name in ATTENTION_OUTPUTS else graph


def _compare_graph(path: Path, graph: str, steps: list[Step], cases: Cases, judge: Judge) -> None:
    """The whole graph in one ONNX Runtime session, step by step (the decoder carrying its K/V cache)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = _output_names(graph, cases.num_layers)
    past_names = decoder_contract(cases.num_layers).input_names[3:-2] if graph == "decoder" else []
    past: list[np.ndarray] = []
    running: dict = {}
    for step in steps:
        if step.first:
            past = [np.zeros(cases.kv_shape, dtype=judge.np_float) for _ in past_names]
        got = session.run(names, {**step.feeds, **dict(zip(past_names, past))})
        want = whole_outputs(step, names, running)
        for name, g in zip(names, got):
            judge.check(graph, name, g, want[name], step.context)
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
        diff /= scale
    return _key(graph, name), diff


def check_parity(folder: Path, wrappers: dict, llava_config, dtype: str, seed: int = 0) -> ParityResult:
    """Both phases at once, for callers that keep the PyTorch model anyway (tests)."""
    return compare_with_onnx(folder, reference_cases(wrappers, llava_config, dtype, seed), dtype)
