"""The exported graphs against PyTorch, on two different tiny checkpoints."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.parity import check_parity
from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder
from graphs.contracts import STEERING_INPUTS, decoder_contract, embed_contract, vision_contract


def test_manifest_records_parity_within_fp32_tolerance(bundle_dir, size):
    manifest = json.loads((bundle_dir(size) / "manifest.json").read_text())
    assert set(manifest["parity"]) == {"vision", "embed", "decoder", "decoder.present_relative", "decoder.attention"}
    assert set(manifest["parity_tolerance"]) == set(manifest["parity"]) == set(manifest["parity_fp32_noise"])
    assert all(0 <= v <= manifest["parity_tolerance"][k] for k, v in manifest["parity"].items()), manifest["parity"]
    assert manifest["opset"] <= 20


def test_graphs_follow_their_contracts(bundle_dir, size):
    folder = bundle_dir(size)
    manifest = json.loads((folder / "manifest.json").read_text())
    layers = manifest["decoder"]["num_layers"]
    for graph, contract in (("vision", vision_contract()), ("embed", embed_contract()),
                            ("decoder", decoder_contract(layers))):
        model = onnx.load(str(folder / f"{graph}.onnx"), load_external_data=False)
        assert [i.name for i in model.graph.input] == contract.input_names
        assert [o.name for o in model.graph.output] == contract.output_names
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 20
    decoder = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
    types = {i.name: i.type.tensor_type for i in decoder.graph.input}
    assert types["image_attention_scale"].elem_type == onnx.TensorProto.FLOAT
    assert types["image_token_mask"].elem_type == onnx.TensorProto.BOOL
    assert set(STEERING_INPUTS) <= set(types)
    # logits for the last position only: [batch, vocab], no sequence axis
    logits = decoder.graph.output[0].type.tensor_type.shape.dim
    assert len(logits) == 2 and logits[1].dim_value == manifest["decoder"]["vocab_size"]


def _hf_model(checkpoint):
    from transformers import LlavaForConditionalGeneration
    return LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()


def test_unit_scale_reproduces_stock_transformers(bundle_dir, checkpoint_dir, size):
    """alpha = 1 everywhere: the decoder graph equals the unmodified HF model (prefill + 3 cached steps)."""
    model = _hf_model(checkpoint_dir(size))
    cfg = model.config
    folder = bundle_dir(size)
    vision = ort.InferenceSession(str(folder / "vision.onnx"))
    embed = ort.InferenceSession(str(folder / "embed.onnx"))
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"))
    text = cfg.text_config
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, cfg.vision_config.image_size, cfg.vision_config.image_size)
    tokens = vision.run(None, {"pixel_values": pixels.numpy()})[0].shape[1]
    ids = torch.tensor([[1, 20, 21] + [cfg.image_token_index] * tokens + [30, 31, 32, 33, 34, 35, 36]])
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=pixels).logits[0]                     # [n, V]
    feats = vision.run(None, {"pixel_values": pixels.numpy()})[0]
    embeds = embed.run(None, {"input_ids": ids.numpy()})[0]
    is_image = (ids == cfg.image_token_index).numpy()
    embeds[is_image] = feats.reshape(-1, feats.shape[-1])
    head_dim = text.hidden_size // heads
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, text.num_key_value_heads, 0, head_dim), np.float32)
            for i in range(layers) for kv in ("key", "value")}
    n = ids.shape[1]
    bounds = [(0, n - 3), (n - 3, n - 2), (n - 2, n - 1), (n - 1, n)]   # prefill, then 3 cached steps
    for start, stop in bounds:
        out = decoder.run(None, {"inputs_embeds": embeds[:, start:stop], "attention_mask": np.ones((1, stop), np.int64),
                                 "position_ids": np.arange(start, stop)[None], **past,
                                 "image_attention_scale": np.ones((1, layers, heads), np.float32),
                                 "image_token_mask": is_image[:, :stop]})
        diff = np.abs(out[0][0] - ref[stop - 1].numpy()).max()
        assert diff <= 1e-4, (start, stop, diff)
        past = dict(zip(past, out[1:]))


def test_scale_changes_logits_only_through_image_keys(bundle_dir, size):
    """Without image tokens the steering input has no effect; with them, alpha moves the logits."""
    folder = bundle_dir(size)
    manifest = json.loads((folder / "manifest.json").read_text())
    d = manifest["decoder"]
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"))
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((1, 6, d["hidden_size"])).astype(np.float32)
    past = {n: np.zeros((1, d["num_key_value_heads"], 0, d["head_dim"]), np.float32)
            for n in decoder_contract(d["num_layers"]).input_names if n.startswith("past")}

    def logits(alpha, mask):
        feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, 6), np.int64),
                 "position_ids": np.arange(6)[None], **past,
                 "image_attention_scale": np.full((1, d["num_layers"], d["num_attention_heads"]), alpha, np.float32),
                 "image_token_mask": mask}
        return decoder.run(["logits"], feeds)[0]

    no_image = np.zeros((1, 6), bool)
    some_image = np.array([[False, True, True, True, False, False]])
    assert np.array_equal(logits(0.5, no_image), logits(2.0, no_image))
    assert np.abs(logits(0.5, some_image) - logits(2.0, some_image)).max() > 1e-2


def test_parity_check_fails_on_a_wrong_graph(bundle_dir, checkpoint_dir):
    """The export-time check is real: PyTorch weights that no longer match the graph are caught by name."""
    from export.errors import ParityError

    model = _hf_model(checkpoint_dir("tiny"))
    with torch.no_grad():
        model.model.language_model.layers[-1].mlp.down_proj.weight.mul_(1.01)
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model), "decoder": SteeredDecoder(model)}
    with pytest.raises(ParityError, match="decoder graph output 'logits' differs"):
        check_parity(bundle_dir("tiny"), wrappers, model.config, "fp32")
