"""The ONNX Runtime sessions of a bundle: vision, embedding, and the decoder that answers.

    vision.onnx, embed.onnx                     one session each
    decoder: the standard decoder.onnx          runtime/standard_decoder.py (immutable caches; TensorRT too)
             or the fused pair                  runtime/fused_decoder.py (plain + steered graphs, shared
                                                KV buffers, the decode step replayed on fixed bindings)
    (``runtime/decoders.py`` chooses)

Both decoders answer the same calls (``runtime/decoder_calls.py``): ``new_cache(capacity)``, ``step`` (the
prompt's rows, steered or not, with the attention read-outs when asked), ``decode`` (one generated token),
``snapshot`` / ``restore`` (the image prefix kept across answers), ``release``.

With TensorRT first among the providers and prebuilt engines in the bundle for this TensorRT
and GPU (``just engines``; ``runtime/engine_layout.py``), each session is opened on the one-node EPContext
model beside its engine instead of the graph: ONNX Runtime's TensorRT provider deserializes the
engine and builds nothing; IO binding and the KV cache on the GPU work as above.  Those engines'
limits (max prompt, max context) become the sessions' ``max_prompt`` / ``max_context``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphs.contracts import (ATTENTION_OUTPUTS, GraphContract, decoder_contract, embed_contract, plain_decoder_contract,
                              steered_decoder_contract, vision_contract)
from graphs.io_spec import GraphIO
from graphs.manifest import Manifest
from graphs.tensorrt_profiles import tensorrt_profile

from .bundle import Bundle
from .decoder_calls import DecoderCalls
from .decoders import choose_decoder
from .errors import BundleError
from .fused_decoder import FusedDecoder
from .graph_io import DecoderNames, check_session
from .image_features import ImageFeatures
from .image_input import PreparedImage
from .providers import device_of, tensorrt_engines
from .standard_decoder import KVCache, StandardDecoder, StepAttention

__all__ = ["BundleSessions", "KVCache", "StepAttention"]

_NP_FLOAT = {"fp32": np.float32, "fp16": np.float16}


def _with_options(providers: list[str], folder: Path, manifest: Manifest, graph: str, engines=None,
                  cuda_graph: bool = False) -> list:
    """TensorRT builds an engine per graph on first use (minutes on a Jetson): cache it beside the bundle,
    and give it one explicit profile that covers every call (else it rebuilds as the KV cache grows).
    With prebuilt ``engines`` it only needs the folder its EPContext model and engine are in.  ``cuda_graph``:
    the CUDA provider captures and replays (the fused pair's plain graph, on its fixed decode bindings)."""
    out = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            out.append((p, {"trt_ep_context_file_path": str(engines.folder)} if engines is not None else
                        {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(Path(folder) / "trt_engines"),
                         **tensorrt_profile(manifest, graph)}))
        elif p == "CUDAExecutionProvider" and cuda_graph:
            out.append((p, {"enable_cuda_graph": "1"}))
        else:
            out.append(p)
    return out


def steered_options(options: ort.SessionOptions, quantized: bool = False) -> ort.SessionOptions:
    """The steered graph's session.  It runs a few rows per answer, so a float pair's steered session reads the
    weights file as ONNX Runtime maps it (page-aligned: memory-mapped, clean pages the kernel can drop) instead
    of packing a private copy of every weight beside the plain session's (measured on spatial: 43 ms a steered
    step mapped, 37 ms packed, 540 MB less).  A quantized pair's is packed: MatMulNBits unpacked dequantizes
    its weights on every call (264 ms against 18 ms), and its packed copy is small."""
    steered = ort.SessionOptions()
    steered.graph_optimization_level = options.graph_optimization_level
    steered.intra_op_num_threads = options.intra_op_num_threads
    if not quantized:
        steered.add_session_config_entry("session.disable_prepacking", "1")
    return steered


class BundleSessions(DecoderCalls):
    def __init__(self, bundle: Bundle, providers: list[str], threads: int | None = None, decoder: str = "auto",
                 cuda_graph: bool = False):
        self.bundle = bundle
        self.folder = bundle.folder
        self.manifest = manifest = bundle.manifest
        self.providers = providers
        self.device = device_of(providers)
        self.float = _NP_FLOAT[manifest.dtype]
        self.decoder_choice = choose_decoder(manifest, providers, decoder)      # standard or fused, and its dtype
        self.decoder_float = _NP_FLOAT[self.decoder_choice.dtype]
        # prebuilt TensorRT engines for this machine (None unless TensorRT is asked for and the bundle has them)
        self.engines = tensorrt_engines(self.folder, (bundle.model_sha256, bundle.manifest_sha256), providers)
        longest = manifest.decoder.max_position_embeddings
        self.max_prompt = self.engines.max_prompt if self.engines else longest       # tokens one call may prefill
        self.max_context = self.engines.max_context if self.engines else longest     # prompt + generated tokens
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        d = manifest.decoder
        L = d.num_layers
        self.vision, vision_io = self._session("vision", options, vision_contract(), manifest.dtype)
        self.embed, embed_io = self._session("embed", options, embed_contract(), manifest.dtype)
        self._vision_names = (vision_io.name("pixel_values"), vision_io.name("image_features"))
        self._embed_names = (embed_io.name("input_ids"), embed_io.name("inputs_embeds"))
        fused = self.decoder_choice.flavour == "fused"
        first = plain_decoder_contract(L) if fused else decoder_contract(L, manifest.has_attention_outputs)
        self.decoder, decoder_io = self._session("decoder", options, first, self.decoder_choice.dtype,
                                                 self.decoder_choice.file, cuda_graph=cuda_graph and fused)
        names = DecoderNames.of(decoder_io, L)
        if fused:
            quantized = manifest.fused_decoders[self.decoder_choice.dtype].get("quantization") is not None
            self.steered, steered_io = self._session("decoder", steered_options(options, quantized),
                                                     steered_decoder_contract(L), self.decoder_choice.dtype,
                                                     self.decoder_choice.steered_file)
            shape = {"layers": L, "kv_heads": d.num_key_value_heads, "head_dim": d.head_dim,
                     "hidden": d.hidden_size, "vocab": d.vocab_size}
            self.runner = FusedDecoder(self.decoder, self.steered, self.embed, names, DecoderNames.of(steered_io, L),
                                       self._embed_names, self.decoder_float, self.device, shape, self.max_context,
                                       cuda_graph=cuda_graph and self.device == "cuda")
        else:
            self.steered = None
            self.runner = StandardDecoder(self.decoder, self.embeddings, names, self.decoder_float, self.device,
                                          d.num_key_value_heads, d.head_dim)

    def _session(self, graph: str, options, contract: GraphContract, float_type: str, file: str | None = None,
                 cuda_graph: bool = False) -> tuple[ort.InferenceSession, GraphIO]:
        """The session of ``file`` (default: the manifest's ``graph``), checked against its IO spec."""
        file = file or self.manifest.graphs[graph]
        path = self.bundle.path(file)
        if self.engines is not None:            # one EPContext node: nothing for ONNX Runtime to optimise
            path = self.engines.context_model(graph)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options,
                                           providers=_with_options(self.providers, self.folder, self.manifest, graph,
                                                                   self.engines, cuda_graph))
        except Exception as e:   # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise BundleError(f"ONNX Runtime cannot load {path}: {e}") from None
        if session.get_providers()[0] != self.providers[0]:
            raise BundleError(f"{path} was loaded on {session.get_providers()[0]}, not the requested {self.providers[0]}")
        io = self.manifest.graph_io(file, contract, float_type)
        check_session(session, io, contract, path)
        return session, io

    # -- the three graphs ---------------------------------------------------------------

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        # pixel_values [1, 3, H, W] -> [1, T, C]
        pixels, features = self._vision_names
        return self.vision.run([features], {pixels: pixel_values.astype(self.float)})[0]

    def features(self, image: PreparedImage) -> ImageFeatures:
        return ImageFeatures(self.image_features(image.inputs)[0])                # [T, C]

    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        # ids [n] int64 -> [1, n, C]
        ids_name, embeds_name = self._embed_names
        return self.embed.run([embeds_name], {ids_name: ids[None]})[0]

    def require_attention_outputs(self) -> None:
        if not self.manifest.has_attention_outputs:
            raise BundleError(f"the bundle {self.folder} was exported before the decoder returned its attention "
                              f"({', '.join(ATTENTION_OUTPUTS)}), so it cannot report attention maps; it answers "
                              f"as before without return_attention. Re-export it with this version of the exporter "
                              f"(just export <model> --out {self.folder} --force) to get them")
