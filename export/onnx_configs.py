"""Optimum ONNX configs for the three LLaVA sub-graphs (stock Optimum has no LLaVA).

Each config declares its graph's inputs/outputs and dynamic axes from the
contract in ``graphs/contracts.py`` and makes the dummy inputs the exporter
traces with.  Optimum's export (TorchScript path, ``dynamo=False``) does the rest.
"""
from __future__ import annotations

import contextlib

import torch
from optimum.exporters.onnx import OnnxConfig
from optimum.utils import NormalizedConfig

from graphs.contracts import GraphContract, decoder_contract, embed_contract, vision_contract

from .settings import DEFAULT_OPSET

# Trace-time sizes: any value > 1 keeps the axis symbolic; past > 0 keeps the Concat alive.
_DUMMY_BATCH, _DUMMY_SEQ, _DUMMY_PAST = 1, 5, 7


class _ContractConfig(OnnxConfig):
    NORMALIZED_CONFIG_CLASS = NormalizedConfig
    DEFAULT_ONNX_OPSET = DEFAULT_OPSET
    contract: GraphContract

    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, task="feature-extraction", float_dtype=float_dtype)
        self.torch_float = torch.float16 if float_dtype == "fp16" else torch.float32

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes() for t in self.contract.inputs}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes() for t in self.contract.outputs}

    def patch_model_for_export(self, model, model_kwargs=None):
        # Optimum's default patcher turns a tuple of past tensors into a DynamicCache;
        # our wrappers take the flat tensors themselves, so nothing needs patching.
        return contextlib.nullcontext()


class VisionOnnxConfig(_ContractConfig):
    contract = vision_contract()

    def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
        size = self._config.vision_config.image_size
        return {"pixel_values": torch.randn(_DUMMY_BATCH, 3, size, size, dtype=self.torch_float)}


class EmbedOnnxConfig(_ContractConfig):
    contract = embed_contract()

    def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
        vocab = self._config.vocab_size
        return {"input_ids": torch.randint(0, vocab, (_DUMMY_BATCH, _DUMMY_SEQ), dtype=torch.int64)}


class DecoderOnnxConfig(_ContractConfig):
    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, float_dtype=float_dtype)
        self.contract = decoder_contract(config.num_hidden_layers)

    def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
        c = self._config
        heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        total = _DUMMY_PAST + _DUMMY_SEQ
        past = [torch.randn(_DUMMY_BATCH, kv_heads, _DUMMY_PAST, head_dim, dtype=self.torch_float)
                for _ in range(2 * c.num_hidden_layers)]
        image_mask = torch.zeros(_DUMMY_BATCH, total, dtype=torch.bool)
        image_mask[:, 1:4] = True
        return {
            "inputs_embeds": torch.randn(_DUMMY_BATCH, _DUMMY_SEQ, c.hidden_size, dtype=self.torch_float),
            "attention_mask": torch.ones(_DUMMY_BATCH, total, dtype=torch.int64),
            "position_ids": torch.arange(_DUMMY_PAST, total, dtype=torch.int64)[None].expand(_DUMMY_BATCH, -1),
            "past_key_values": past,
            "image_attention_scale": torch.full((_DUMMY_BATCH, c.num_hidden_layers, heads), 1.5),
            "image_token_mask": image_mask,
        }
