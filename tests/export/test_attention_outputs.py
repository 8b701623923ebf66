"""The decoder graph's attention outputs against stock transformers, on both tiny checkpoints.

The reference is transformers' own eager Llama (``output_attentions=True``) over the whole
sequence at once, with the image-key logits scaled the way the contract says, written here
without export/: no cache, no wrapper, no steered attention function.  The graph runs as the
runtime runs it: a prefill, then cached steps, each with its own scale.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers.models.llama import modeling_llama

from export.errors import ParityError
from export.parity import compare_with_onnx, reference_cases
from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder
from graphs.contracts import ATTENTION_OUTPUTS, IMAGE_ATTENTION_SHARE, LAST_ROW_ATTENTION, decoder_contract

TOLERANCE = 1e-5


def _hf_model(checkpoint):
    from transformers import LlavaForConditionalGeneration
    return LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()


@contextlib.contextmanager
def _scaled_image_keys(is_image: torch.Tensor, scale_of_row):
    """Stock eager attention, with the logits of image keys in query row r (absolute position)
    multiplied by ``scale_of_row(r)`` [L, H] before the mask, as the contract says."""
    stock = modeling_llama.eager_attention_forward

    def scaled(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key = modeling_llama.repeat_kv(key, module.num_key_value_groups)
        value = modeling_llama.repeat_kv(value, module.num_key_value_groups)
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling                 # [1, H, n, n]
        for row in range(weights.shape[2]):
            alpha = torch.as_tensor(scale_of_row(row))[module.layer_idx]             # [H]
            weights[0, :, row, is_image] *= alpha[:, None]
        if attention_mask is not None:
            weights = weights + attention_mask[:, :, :, : key.shape[-2]]
        weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    modeling_llama.eager_attention_forward = scaled
    try:
        yield
    finally:
        modeling_llama.eager_attention_forward = stock


def _scales(layers, heads):
    per_head = np.random.default_rng(3).uniform(0.3, 3.0, (layers, heads)).astype(np.float32)
    full = lambda a: np.full((layers, heads), a, np.float32)                          # noqa: E731
    # (prefill scale, cached-steps scale): the contract case (one alpha for every row), and the
    # runtime's (alpha = 1 for the prefill, alpha for the last prompt token)
    return {"0.5": (full(0.5), full(0.5)), "2.0": (full(2.0), full(2.0)),
            "per-layer-head": (per_head, per_head), "1 then per-layer-head": (full(1.0), per_head)}


@pytest.mark.parametrize("case", ["0.5", "2.0", "per-layer-head", "1 then per-layer-head"])
def test_attention_outputs_equal_stock_transformers(bundle_dir, checkpoint_dir, size, case):
    model = _hf_model(checkpoint_dir(size))
    text = model.config.text_config
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    head_dim = text.hidden_size // heads
    prefill_scale, step_scale = _scales(layers, heads)[case]
    n, prefill = 14, 11                               # a prefill of 11 tokens, then a 1-token and a 2-token step
    chunks = [(0, prefill), (prefill, prefill + 1), (prefill + 1, n)]
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((1, n, text.hidden_size)).astype(np.float32)
    is_image = np.zeros(n, bool)
    is_image[2:8] = True

    with torch.no_grad(), _scaled_image_keys(torch.from_numpy(is_image),
                                             lambda r: prefill_scale if r < prefill else step_scale):
        attentions = model.model.language_model(inputs_embeds=torch.from_numpy(embeds),
                                                output_attentions=True).attentions
    reference = torch.stack([a[0].double().mean(dim=0) for a in attentions]).numpy()   # [L, n, n]: mean over heads

    decoder = ort.InferenceSession(str(bundle_dir(size) / "decoder.onnx"), providers=["CPUExecutionProvider"])
    contract = decoder_contract(layers)
    past_names = [n_ for n_ in contract.input_names if n_.startswith("past_key_values.")]
    past = [np.zeros((1, text.num_key_value_heads, 0, head_dim), np.float32) for _ in past_names]
    for start, stop in chunks:
        scale = prefill_scale if start == 0 else step_scale
        out = dict(zip(contract.output_names, decoder.run(None, {
            "inputs_embeds": embeds[:, start:stop], "attention_mask": np.ones((1, stop), np.int64),
            "position_ids": np.arange(start, stop)[None], **dict(zip(past_names, past)),
            "image_attention_scale": scale[None], "image_token_mask": is_image[None, :stop]})))
        row, share = out[LAST_ROW_ATTENTION], out[IMAGE_ATTENTION_SHARE]
        assert row.dtype == share.dtype == np.float32
        assert row.shape == (1, layers, stop) and share.shape == (1, layers)
        want = reference[:, stop - 1, :stop]                                          # [L, stop]: the call's last row
        assert np.abs(row[0] - want).max() <= TOLERANCE, (case, start, stop)
        assert np.abs(share[0] - want[:, is_image[:stop]].sum(-1)).max() <= TOLERANCE, (case, start, stop)
        past = [out[name.replace("past_key_values", "present")] for name in past_names]


def test_manifest_records_the_attention_outputs_and_the_grid(bundle_dir, size):
    manifest = json.loads((bundle_dir(size) / "manifest.json").read_text())
    assert manifest["outputs"]["decoder"][-2:] == list(ATTENTION_OUTPUTS)
    assert 0 <= manifest["parity"]["decoder.attention"] <= manifest["parity_tolerance"]["decoder.attention"]
    grid, cls = {"tiny": ([5, 5], False), "tiny-mha": ([4, 4], True)}[size]
    assert manifest["image_grid"] == grid and manifest["image_cls_token"] is cls
    assert grid[0] * grid[1] + cls == manifest["image_tokens_per_image"]
    decoder = onnx.load(str(bundle_dir(size) / "decoder.onnx"), load_external_data=False)
    types = {o.name: o.type.tensor_type.elem_type for o in decoder.graph.output}
    assert types[LAST_ROW_ATTENTION] == types[IMAGE_ATTENTION_SHARE] == onnx.TensorProto.FLOAT


def test_parity_check_catches_a_wrong_attention_output(bundle_dir, checkpoint_dir):
    """The export-time check compares the attention outputs too, and names them."""
    model = _hf_model(checkpoint_dir("tiny"))
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model), "decoder": SteeredDecoder(model)}
    cases = reference_cases(wrappers, model.config, "fp32")
    result = compare_with_onnx(bundle_dir("tiny"), cases, "fp32")
    limit = result.tolerances.limits["decoder.attention"]
    assert result.worst["decoder.attention"] <= limit < 1e-5
    step = cases.graphs["decoder"][-1]                       # a cached step of the per-layer-head case
    step.expected[-2] = step.expected[-2].copy()
    step.expected[-2][0, -1, 3] += 3e-5                      # above the attention's limit, below the logits'
    with pytest.raises(ParityError, match="'last_row_attention' differs"):
        compare_with_onnx(bundle_dir("tiny"), cases, "fp32")


def test_image_tokens_are_the_patch_grid_row_major_after_any_cls(checkpoint_dir, size):
    """What the maps' layout rests on: image token k (after the CLS token, if kept) is patch
    (k // cols, k % cols) of the preprocessed image, row 0 at the top.  Checked on a vision tower
    made local (no attention or MLP updates, no position embeddings), so a patch's feature
    depends on its own pixels only."""
    model = _hf_model(checkpoint_dir(size))
    vision = model.model.vision_tower.vision_model
    with torch.no_grad():
        for layer in vision.encoder.layers:
            for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
        vision.embeddings.position_embedding.weight.zero_()
    encoder = VisionEncoder(model)
    cfg = model.config.vision_config
    patch, cols = cfg.patch_size, cfg.image_size // cfg.patch_size
    cls = model.config.vision_feature_select_strategy == "full"
    blank = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    for r, c in [(0, cols - 1), (cols - 1, 1), (1, 0)]:
        marked = blank.clone()
        marked[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 1.0
        with torch.no_grad():
            changed = (encoder(marked) - encoder(blank)).abs().amax(dim=-1)[0] > 1e-6      # [T]
        assert torch.nonzero(changed).flatten().tolist() == [int(cls) + r * cols + c]
