"""A Qwen bundle's ONNX Runtime sessions: vision, embedding, and the decoder that answers.

    vision.onnx   the image's feeds (runtime/qwen_vl/image_input.py), bound by role
                  -> image_features [T, C] (+ Qwen3-VL: deepstack_features [D, T, C])
    embed.onnx    input_ids [1, n] -> inputs_embeds [1, n, C]
    decoder       decoder.onnx (runtime/standard_decoder.py) or the fused pair (runtime/fused_decoder.py),
                  as ``runtime/decoders.py`` chooses; the caller gives M-RoPE position_ids [3, 1, S] and,
                  for Qwen3-VL, deepstack_embeds [D, 1, S, C] with every call

Every tensor is bound by its role in the manifest's records (``graphs/qwen_vl_contracts.py``).  The fused
pair's records are the standard decoder's (the plain graph without the steering inputs and the attention
outputs); each session is checked against its records when it opens (``IOSpecError`` where they differ).
No TensorRT for Qwen bundles yet: asked for, it is a ``ProviderError``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from graphs.contracts import ATTENTION_OUTPUTS, STEERING_INPUTS
from graphs.io_spec import GraphIO
from graphs.qwen_manifest import QwenManifest
from graphs.qwen_vl_contracts import vision_contract
from runtime.bundle import Bundle
from runtime.decoder_calls import DecoderCalls
from runtime.decoders import choose
from runtime.errors import BundleError, ProviderError
from runtime.fused_decoder import FusedDecoder
from runtime.graph_io import DecoderNames, check_session
from runtime.image_features import ImageFeatures
from runtime.image_input import PreparedImage
from runtime.providers import device_of
from runtime.sessions import steered_options
from runtime.standard_decoder import StandardDecoder

_NP_FLOAT = {"fp32": np.float32, "fp16": np.float16}


@dataclass(frozen=True)
class _Roles:
    """What ``check_session`` asks of a graph: the roles its records must hold."""
    name: str
    input_roles: tuple[str, ...]
    output_roles: tuple[str, ...]


class QwenSessions(DecoderCalls):
    def __init__(self, bundle: Bundle, providers: list[str], threads: int | None = None, decoder: str = "auto",
                 cuda_graph: bool = False):
        if providers[0] == "TensorrtExecutionProvider":
            raise ProviderError("a Qwen bundle has no TensorRT engines yet; load it with providers=['cpu'] or ['cuda']")
        self.bundle, self.folder, self.providers = bundle, bundle.folder, providers
        self.manifest = m = bundle.manifest
        self.device = device_of(providers)
        self.float = _NP_FLOAT[m.dtype]
        self.decoder_choice = choose(m.graph_file("decoder"), m.dtype, m.fused_decoders, providers, decoder)
        self.decoder_float = _NP_FLOAT[self.decoder_choice.dtype]
        self.engines = None
        self.max_prompt = self.max_context = m.decoder["max_position_embeddings"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        io = {name: GraphIO.from_json(graph) for name, graph in m.graphs.items()}
        self.vision = self._session(m.graph_file("vision"), options, io["vision"], "vision")
        self.embed = self._session(m.graph_file("embed"), options, io["embed"], "embed")
        self._vision_inputs = _vision_names(m, io["vision"])
        self._vision_outputs = [t.name for t in io["vision"].outputs]
        self._embed_names = (io["embed"].name("input_ids"), io["embed"].name("inputs_embeds"))
        self.runner = self._decoder(m, io["decoder"], options)

    def _decoder(self, m: QwenManifest, standard: GraphIO, options):
        d, choice = m.decoder, self.decoder_choice
        layers = d["num_layers"]
        if choice.flavour == "standard":
            self.decoder, self.steered = self._session(choice.file, options, standard, "decoder"), None
            return StandardDecoder(self.decoder, self.embeddings, DecoderNames.of(standard, layers), self.decoder_float,
                                   self.device, d["num_key_value_heads"], d["head_dim"])
        plain = GraphIO(tuple(t for t in standard.inputs if t.role not in STEERING_INPUTS),
                        tuple(t for t in standard.outputs if t.role not in ATTENTION_OUTPUTS))
        quantized = m.fused_decoders[choice.dtype].get("quantization") is not None
        self.decoder = self._session(choice.file, options, plain, "decoder (plain)")
        self.steered = self._session(choice.steered_file, steered_options(options, quantized), standard,
                                     "decoder (steered)")
        shape = {"layers": layers, "kv_heads": d["num_key_value_heads"], "head_dim": d["head_dim"],
                 "hidden": d["hidden_size"], "vocab": d["vocab_size"]}
        return FusedDecoder(self.decoder, self.steered, self.embed, DecoderNames.of(plain, layers),
                            DecoderNames.of(standard, layers), self._embed_names, self.decoder_float, self.device,
                            shape, self.max_context)

    def _session(self, file: str, options, io: GraphIO, what: str) -> ort.InferenceSession:
        path = self.bundle.path(file)
        try:
            session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as e:   # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise BundleError(f"ONNX Runtime cannot load {path}: {e}") from None
        if session.get_providers()[0] != self.providers[0]:
            raise BundleError(f"{path} was loaded on {session.get_providers()[0]}, not the requested {self.providers[0]}")
        roles = _Roles(what, tuple(t.role for t in io.inputs), tuple(t.role for t in io.outputs))
        check_session(session, io, roles, path)
        return session

    # -- the vision and embedding graphs ---------------------------------------------------

    def features(self, image: PreparedImage) -> ImageFeatures:
        """The image's features [T, C] (and DeepStack's [D, T, C]) from its feeds."""
        feeds = {self._vision_inputs[k]: v for k, v in image.inputs.items()}
        patches = self._vision_inputs["pixel_values"]
        feeds[patches] = feeds[patches].astype(self.float, copy=False)                  # [N, C*T*P*P]
        out = self.vision.run(self._vision_outputs, feeds)
        return ImageFeatures(out[0], out[1] if len(out) > 1 else None)

    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        # ids [n] int64 -> [1, n, C]
        ids_name, embeds_name = self._embed_names
        return self.embed.run([embeds_name], {ids_name: ids[None]})[0]

    def require_attention_outputs(self) -> None:
        """Every Qwen decoder returns its attention read-outs (``graphs/qwen_vl_contracts.py``)."""


def _vision_names(m: QwenManifest, io: GraphIO) -> dict[str, str]:
    """``vision_feeds``' keys (the contract's names) -> the graph's names, through their roles."""
    contract = vision_contract(m.vision.get("window_size") is not None, m.deepstack_layers > 0)
    missing = [t.role for t in contract.inputs if not io.has(t.role)]
    if missing:
        raise BundleError(f"the vision graph's records lack the roles {', '.join(missing)}")
    return {t.name: io.name(t.role) for t in contract.inputs}
