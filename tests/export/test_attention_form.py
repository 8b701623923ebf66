"""The scaled-keys attention form: the same attention as the paper's scaled logits, in a fusable chain.

Parity is measured against the PyTorch decoder in the *other* form (scaled logits, the paper's
arithmetic), alpha 0.5, 1, 2 and a per-layer-per-head scale, prefill and three cached steps;
greedy answers against the independent reference in tests/runtime/reference.py.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from export.parity import compare_with_onnx, reference_cases
from graphs.__main__ import attention_report, check_bundle
from graphs.manifest import Manifest
from tests.conftest import random_image
from tests.runtime.reference import Reference

QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def keys_bundle(checkpoint_dir, tmp_path_factory):
    from export import export_llava

    made = {}

    def get(size, dtype="fp32"):
        if (size, dtype) not in made:
            out = tmp_path_factory.mktemp(f"keys-{size}-{dtype}") / "bundle"
            export_llava(str(checkpoint_dir(size)), out, dtype=dtype, attention_form="scaled-keys", log=lambda m: None)
            made[size, dtype] = out
        return made[size, dtype]
    return get


def _hf(checkpoint):
    from transformers import LlavaForConditionalGeneration
    return LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()


def test_manifest_records_the_form_and_parity(keys_bundle, size):
    manifest = Manifest.read(keys_bundle(size))
    assert manifest.attention_form == "scaled-keys"
    assert all(0 <= v <= manifest.parity_tolerance[k] for k, v in manifest.parity.items()), manifest.parity


def test_scaled_keys_graph_matches_the_scaled_logits_reference(keys_bundle, checkpoint_dir, size):
    """ONNX (keys scaled) vs PyTorch (logits scaled): logits, the unscaled present K/V, the attention outputs."""
    from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

    model = _hf(checkpoint_dir(size))
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model),
                "decoder": SteeredDecoder(model, "scaled-logits")}
    cases = reference_cases(wrappers, model.config, "fp32")
    labels = {s.context.split(",")[0] for s in cases.graphs["decoder"]}
    assert {"alpha=0.50", "alpha=1.00", "alpha=2.00"} < labels and any("per-layer-head" in c for c in labels)
    result = compare_with_onnx(keys_bundle(size), cases, "fp32")       # raises ParityError past the tolerance
    for key in ("decoder", "decoder.present_relative", "decoder.attention"):
        assert result.worst[key] <= result.tolerances.limits[key], key


def test_the_cache_keeps_unscaled_keys(keys_bundle, size):
    folder = keys_bundle(size)
    d = Manifest.read(folder).decoder
    session = ort.InferenceSession(str(folder / "decoder.onnx"))
    rng = np.random.default_rng(0)
    feeds = {"inputs_embeds": rng.standard_normal((1, 6, d.hidden_size)).astype(np.float32),
             "attention_mask": np.ones((1, 6), np.int64), "position_ids": np.arange(6)[None],
             "image_token_mask": np.array([[False, True, True, True, False, False]])}
    feeds.update({i.name: np.zeros((1, d.num_key_value_heads, 0, d.head_dim), np.float32)
                  for i in session.get_inputs() if i.name.startswith("past_key_values.")})
    names = [o.name for o in session.get_outputs()]

    def run(alpha):
        scale = np.full((1, d.num_layers, d.num_attention_heads), alpha, np.float32)
        return dict(zip(names, session.run(None, {**feeds, "image_attention_scale": scale})))

    one, two = run(1.0), run(2.0)
    # layer 0's present keys are its input's projection: scaled in the cache they would differ at image keys
    assert np.array_equal(one["present.0.key"], two["present.0.key"])
    assert np.array_equal(one["present.0.value"], two["present.0.value"])
    assert np.abs(one["logits"] - two["logits"]).max() > 1e-3


@pytest.mark.parametrize("steering", ["none", "scalingvis-0.5", "scalingvis-2", "adaptvis"])
def test_greedy_answers_equal_the_independent_reference(keys_bundle, checkpoint_dir, size, steering):
    vlm, ref = runtime.load(keys_bundle(size)), Reference(checkpoint_dir(size))
    for seed in range(2):
        image = random_image(seed)
        if steering == "none":
            ours, want = vlm.answer(image, QUESTION, steering=None, max_new_tokens=6), ref.plain(image, QUESTION, 6)
        elif steering.startswith("scalingvis"):
            alpha = float(steering.split("-")[1])
            ours = vlm.answer(image, QUESTION, steering=runtime.ScalingVis(alpha), max_new_tokens=6)
            want = ref.scalingvis(image, QUESTION, alpha, 6)
        else:
            ours = vlm.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, 0.5), max_new_tokens=6)
            want = ref.adaptvis(image, QUESTION, 0.5, 2.0, 0.5, 6)
        assert ours.token_ids == want.token_ids and ours.alpha == want.alpha
        if want.confidence is not None:
            assert abs(ours.confidence - want.confidence) <= 1e-5


def test_graphs_check_reports_every_layer_fusable_only_in_the_scaled_keys_form(keys_bundle, bundle_dir, size):
    keys, logits = attention_report(keys_bundle(size)), attention_report(bundle_dir(size))
    layers = Manifest.read(keys_bundle(size)).decoder.num_layers
    assert [c.layer for c in keys] == list(range(layers)) and all(c.fusable for c in keys)
    assert all(c.detail == "MatMul -> Mul(constant) -> Cast -> Add(mask) -> Softmax -> MatMul" for c in keys)
    form = Manifest.read(bundle_dir(size)).attention_form
    assert all(c.fusable == (form == "scaled-keys") for c in logits)
    if form == "scaled-logits":
        assert all("multiplies the scores by a data-dependent tensor" in c.detail for c in logits)
    assert check_bundle(keys_bundle(size)) == {"vision": [], "embed": [], "decoder": []}


def test_fp16_scaled_keys_export_is_parity_checked_and_passes_the_checks(keys_bundle):
    folder = keys_bundle("tiny", "fp16")
    manifest = Manifest.read(folder)
    assert manifest.dtype == "fp16" and manifest.attention_form == "scaled-keys"
    assert manifest.parity["decoder"] <= 5e-2
    for target in ("jetpack6", "jetpack7", "desktop"):
        assert check_bundle(folder, target) == {"vision": [], "embed": [], "decoder": []}
    assert all(c.fusable for c in attention_report(folder))


def test_an_unknown_form_is_refused(checkpoint_dir, tmp_path):
    from export import export_llava
    from export.errors import ExportError
    with pytest.raises(ExportError, match="attention_form must be one of scaled-logits, scaled-keys"):
        export_llava(str(checkpoint_dir("tiny")), tmp_path / "b", attention_form="fused")
    assert not (tmp_path / "b").exists()


def test_manifests_without_the_field_read_as_scaled_logits(bundle_dir, tmp_path):
    data = json.loads((bundle_dir("tiny") / "manifest.json").read_text())
    data.pop("attention_form", None)
    assert Manifest.from_dict(data).attention_form == "scaled-logits"


def test_cli_passes_the_form(monkeypatch, tmp_path):
    import export.route
    from export.__main__ import main
    seen = {}
    monkeypatch.setattr(export.route, "export_model", lambda *a, **k: seen.update(k))
    assert main(["some/checkpoint", "--out", str(tmp_path / "b"), "--attention-form", "scaled-keys"]) == 0
    assert seen["attention_form"] == "scaled-keys"
