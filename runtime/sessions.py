"""The three ONNX Runtime sessions of a bundle, and one decoder step with IO binding.

The KV cache never leaves ONNX Runtime between steps:

    step t:  past OrtValues (device) --bind--> decoder --> present OrtValues (device)
    step t+1: those present OrtValues are bound as past, as they are

Only the logits ([1, vocab]) come back to host memory.  A cache is a tuple of
OrtValues that no step writes into (each step makes new, longer tensors), so
one cached prefix can start any number of continuations, from any thread.

The decoder graph has attention outputs (the last query row's attention, a [1, L, total]
tensor: negligible next to the step); ``step`` leaves them unbound, so they are never
copied anywhere, and ``step_with_attention`` binds them to host memory as well.

With TensorRT first among the providers and prebuilt engines in the bundle for this TensorRT
and GPU (``just engines``; ``runtime/engine_layout.py``), each session is opened on the one-node EPContext
model beside its engine instead of the graph: ONNX Runtime's TensorRT provider deserializes the
engine and builds nothing; IO binding and the KV cache on the GPU work as above.  Those engines'
limits (max prompt, max context) become the sessions' ``max_prompt`` / ``max_context``.

The decoder session opens the bundle's standard ``decoder.onnx`` or a fused one
(``decoder_fused_<dtype>.onnx``: ONNX Runtime contrib ops, CPU and CUDA; ``runtime/decoders.py``
chooses); both have the same inputs and outputs, and the cache above works the same with either.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphs.contracts import ATTENTION_OUTPUTS, IMAGE_ATTENTION_SHARE, LAST_ROW_ATTENTION, STEERING_INPUTS, \
    bundle_contracts
from graphs.manifest import MANIFEST_FILE, Manifest
from graphs.tensorrt_profiles import tensorrt_profile

from .decoders import choose_decoder
from .errors import BundleError
from .providers import device_of, tensorrt_engines

_NP_FLOAT = {"fp32": np.float32, "fp16": np.float16}


def _with_options(providers: list[str], folder: Path, manifest: Manifest, graph: str, engines=None) -> list:
    """TensorRT builds an engine per graph on first use (minutes on a Jetson): cache it beside the bundle,
    and give it one explicit profile that covers every call (else it rebuilds as the KV cache grows).
    With prebuilt ``engines`` it only needs the folder its EPContext model and engine are in."""
    if "TensorrtExecutionProvider" not in providers:
        return list(providers)
    if engines is not None:
        trt = {"trt_ep_context_file_path": str(engines.folder)}
    else:
        trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(Path(folder) / "trt_engines"),
               **tensorrt_profile(manifest, graph)}
    return [(p, trt) if p == "TensorrtExecutionProvider" else p for p in providers]


@dataclass(frozen=True)
class KVCache:
    values: tuple            # 2L OrtValues [1, KV, length, D], ordered like manifest.past_names()
    length: int


@dataclass(frozen=True, eq=False)
class StepAttention:
    """The decoder's attention outputs for the last query row of one step (see ``decoder_contract``)."""

    last_row: np.ndarray     # float32 [L, total]: softmax over every key (after the steering scale), mean over heads
    image_share: np.ndarray  # float32 [L]: last_row summed over the image-token keys


class BundleSessions:
    def __init__(self, folder: Path, manifest: Manifest, providers: list[str], threads: int | None = None,
                 decoder: str = "auto"):
        self.folder = Path(folder)
        self.manifest = manifest
        self.providers = providers
        self.device = device_of(providers)
        self.float = _NP_FLOAT[manifest.dtype]
        self.decoder_choice = choose_decoder(manifest, providers, decoder)      # standard or fused, and its dtype
        self.decoder_float = _NP_FLOAT[self.decoder_choice.dtype]
        # prebuilt TensorRT engines for this machine (None unless TensorRT is asked for and the bundle has them)
        self.engines = tensorrt_engines(self.folder, self.folder / MANIFEST_FILE, providers)
        longest = manifest.decoder.max_position_embeddings
        self.max_prompt = self.engines.max_prompt if self.engines else longest       # tokens one call may prefill
        self.max_context = self.engines.max_context if self.engines else longest     # prompt + generated tokens
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.vision = self._session(folder, "vision", options)
        self.embed = self._session(folder, "embed", options)
        self.decoder = self._session(folder, "decoder", options, self.decoder_choice.file)
        self._check_contracts()
        self.past_names = manifest.past_names()
        self.present_names = manifest.present_names()

    def _session(self, folder: Path, graph: str, options, file: str | None = None) -> ort.InferenceSession:
        path = Path(folder) / (file or self.manifest.graphs[graph])
        if self.engines is not None:            # one EPContext node: nothing for ONNX Runtime to optimise
            path = self.engines.context_model(graph)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options,
                                           providers=_with_options(self.providers, folder, self.manifest, graph,
                                                                   self.engines))
        except Exception as e:   # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise BundleError(f"ONNX Runtime cannot load {path}: {e}") from None
        if session.get_providers()[0] != self.providers[0]:
            raise BundleError(f"{path} was loaded on {session.get_providers()[0]}, not the requested {self.providers[0]}")
        return session

    def _check_contracts(self) -> None:
        contracts = bundle_contracts(self.manifest.decoder.num_layers, self.manifest.has_attention_outputs)
        for name, contract in contracts.items():
            session = getattr(self, name)
            have = {i.name for i in session.get_inputs()}
            missing = [n for n in contract.input_names if n not in have]
            if missing:
                what = ("it has no image-attention steering inputs (exported without this project's exporter?)"
                        if set(missing) & set(STEERING_INPUTS) else "")
                raise BundleError(f"the {contract.name} graph lacks inputs {', '.join(missing)}; {what}".rstrip("; "))
            outs = {o.name for o in session.get_outputs()}
            missing = [n for n in contract.output_names if n not in outs]
            if missing:
                raise BundleError(f"the {contract.name} graph lacks outputs {', '.join(missing)}")

    # -- the three graphs ---------------------------------------------------------------

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        # pixel_values [1, 3, H, W] -> [1, T, C]
        return self.vision.run(["image_features"], {"pixel_values": pixel_values.astype(self.float)})[0]

    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        # ids [n] int64 -> [1, n, C]
        return self.embed.run(["inputs_embeds"], {"input_ids": ids[None]})[0]

    def empty_cache(self) -> KVCache:
        d = self.manifest.decoder
        empty = np.zeros((1, d.num_key_value_heads, 0, d.head_dim), dtype=self.decoder_float)
        return KVCache(tuple(ort.OrtValue.ortvalue_from_numpy(empty, self.device, 0) for _ in self.past_names), 0)

    def step(self, embeds: np.ndarray, cache: KVCache, scale: np.ndarray, image_mask: np.ndarray
             ) -> tuple[np.ndarray, KVCache]:
        """Run the decoder on ``embeds`` [1, S, C] after ``cache``; returns (logits [V] float32, new cache).

        ``scale`` [1, L, H] multiplies the image-key logits of these S query rows;
        ``image_mask`` [1, cache.length + S] marks image-token keys.
        """
        logits, new_cache, _ = self._step(embeds, cache, scale, image_mask, attention=False)
        return logits, new_cache

    def step_with_attention(self, embeds: np.ndarray, cache: KVCache, scale: np.ndarray, image_mask: np.ndarray
                            ) -> tuple[np.ndarray, KVCache, StepAttention]:
        """``step``, also returning the attention of its last query row (the last of ``embeds``).

        Raises ``BundleError`` for a bundle exported before the decoder had attention outputs.
        """
        self.require_attention_outputs()
        return self._step(embeds, cache, scale, image_mask, attention=True)

    def require_attention_outputs(self) -> None:
        if not self.manifest.has_attention_outputs:
            raise BundleError(f"the bundle {self.folder} was exported before the decoder returned its attention "
                              f"({', '.join(ATTENTION_OUTPUTS)}), so it cannot report attention maps; it answers "
                              f"as before without return_attention. Re-export it with this version of the exporter "
                              f"(just export <model> --out {self.folder} --force) to get them")

    def _step(self, embeds, cache: KVCache, scale, image_mask, attention: bool):
        seq = embeds.shape[1]
        total = cache.length + seq
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds, dtype=self.decoder_float))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        binding.bind_cpu_input("position_ids", np.arange(cache.length, total, dtype=np.int64)[None])
        binding.bind_cpu_input("image_attention_scale", scale)
        binding.bind_cpu_input("image_token_mask", np.ascontiguousarray(image_mask[:, :total]))
        for name, value in zip(self.past_names, cache.values):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device, 0)
        if attention:                       # else left unbound: never copied out
            binding.bind_output(LAST_ROW_ATTENTION, "cpu")
            binding.bind_output(IMAGE_ATTENTION_SHARE, "cpu")
        self.decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()     # in binding order
        logits = outputs[0].numpy()[0].astype(np.float32, copy=False)          # [V]
        n_kv = len(self.present_names)
        new_cache = KVCache(tuple(outputs[1: 1 + n_kv]), total)
        if not attention:
            return logits, new_cache, None
        rows = StepAttention(outputs[1 + n_kv].numpy()[0].astype(np.float32, copy=False),       # [L, total]
                             outputs[2 + n_kv].numpy()[0].astype(np.float32, copy=False))       # [L]
        return logits, new_cache, rows
