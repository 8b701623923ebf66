"""The assembled spatial model end to end: checkpoint from the pip package and the committed file,
export parity on real weights, the runtime against the PyTorch reference, and 8 held-out scenes."""
from __future__ import annotations

import json

import pytest

from evaluation.scoring import strict_correct
from readers.datasets import load_dataset
import runtime
from scenes.synthetic import generate
from spatial.architecture import PROMPT_TEMPLATE
from tests.runtime.reference import Reference

HELD_OUT_SEED = 7          # < 1000: never trained on


@pytest.fixture(scope="module")
def spatial_checkpoint(tmp_path_factory):
    from spatial.assemble import build_spatial_checkpoint

    return build_spatial_checkpoint(tmp_path_factory.mktemp("spatial") / "checkpoint", log=lambda m: None)


@pytest.fixture(scope="module")
def spatial_bundle(spatial_checkpoint, tmp_path_factory):
    from export import export_llava

    out = tmp_path_factory.mktemp("spatial-bundle") / "bundle"
    export_llava(str(spatial_checkpoint), out, log=lambda m: None)          # default tolerances
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    path = generate(tmp_path_factory.mktemp("scenes"), n=8, seed=HELD_OUT_SEED, size=336)
    return load_dataset(path)


def test_export_parity_on_real_weights(spatial_bundle):
    manifest = json.loads((spatial_bundle / "manifest.json").read_text())
    limits, noise = manifest["parity_tolerance"], manifest["parity_fp32_noise"]
    # measured against float64 (30 real layers: PyTorch fp32's logits are ~1e-4 off), and well inside
    assert all(manifest["parity"][k] <= limits[k] / 2 for k in limits), (manifest["parity"], limits)
    assert 2e-5 < noise["decoder"] < 1e-3 and limits["decoder"] < 2e-3
    assert manifest["prompt_template"] == PROMPT_TEMPLATE      # what training fed the model
    assert manifest["decoder"]["num_layers"] == 30 and manifest["image_tokens_per_image"] == 36


def test_onnx_runtime_is_as_exact_as_pytorch_fp32(spatial_bundle, spatial_checkpoint):
    """This model's fp32 rounding is well above a tiny model's: judge both sides against fp64 arithmetic.

    On every parity case (alpha 0.5, 1, 2, per-layer-head; prefill, 3 cached steps), ONNX Runtime's
    logits must be no further from the exact (fp64 PyTorch) ones than PyTorch's own fp32 logits are
    (with 50 % slack: the two sum in different orders; measured 0.82x on an AVX2 CPU, 1.25x on an
    AVX-512 one), and within 2e-4 of them."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import LlavaForConditionalGeneration

    from export.parity import ReferenceRecorder
    from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

    model = LlavaForConditionalGeneration.from_pretrained(spatial_checkpoint, attn_implementation="eager").eval()
    rec = ReferenceRecorder(model.config, "fp32", measure_noise=False)
    rec.vision(VisionEncoder(model))
    rec.embed(TokenEmbedding(model))
    rec.decoder(SteeredDecoder(model))
    exact = SteeredDecoder(model.double())
    session = ort.InferenceSession(str(spatial_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    layers, kv_shape = rec.cases.num_layers, rec.cases.kv_shape
    worst_ort = worst_torch = 0.0
    for step in rec.cases.graphs["decoder"]:
        if step.first:
            past64 = [torch.zeros(kv_shape, dtype=torch.float64) for _ in range(2 * layers)]
            past = [np.zeros(kv_shape, np.float32) for _ in range(2 * layers)]
        feeds = dict(step.feeds)
        for i in range(layers):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
        out = session.run(None, feeds)
        f = {k: torch.from_numpy(v) for k, v in step.feeds.items()}
        with torch.no_grad():
            out64 = exact(f["inputs_embeds"].double(), f["attention_mask"], f["position_ids"], past64,
                          f["image_attention_scale"].double(), f["image_token_mask"])
        logits64 = out64[0].numpy()
        worst_ort = max(worst_ort, float(np.abs(out[0] - logits64).max()))
        worst_torch = max(worst_torch, float(np.abs(step.expected[0] - logits64).max()))
        past, past64 = out[1: 1 + 2 * layers], list(out64[1: 1 + 2 * layers])
    assert worst_ort <= 1.5 * worst_torch and worst_ort <= 2e-4, (worst_ort, worst_torch)


def test_runtime_equals_the_pytorch_reference(spatial_bundle, spatial_checkpoint, scenes):
    vlm, ref = runtime.load(spatial_bundle), Reference(spatial_checkpoint)
    for item in scenes.items[:3]:
        from PIL import Image

        image = Image.open(item.image_path)
        ours = vlm.answer(image, item.question, steering=None, max_new_tokens=6)
        theirs = ref.plain(image, item.question, 6)
        assert ours.token_ids == theirs.token_ids
        assert abs(ours.confidence - theirs.confidence) <= 1e-5
        steered = vlm.answer(image, item.question, steering=runtime.AdaptVis(0.5, 1.5, 0.9), max_new_tokens=6)
        ref_steered = ref.adaptvis(image, item.question, 0.5, 1.5, 0.9, 6)
        assert steered.token_ids == ref_steered.token_ids and steered.alpha == ref_steered.alpha


def test_answers_eight_held_out_scenes(spatial_bundle, scenes):
    vlm = runtime.load(spatial_bundle)
    assert len(scenes.items) == 8 and {i.relation for i in scenes.items} == {"on", "under", "left_of", "right_of"}
    right = []
    for item in scenes.items:
        ans = vlm.answer(item.image_path, item.question, steering=None)
        right.append(strict_correct(ans.text, item.gold, item.options))
    assert sum(right) >= 7, right


def test_the_fused_pair_on_real_weights_equals_the_reference(spatial_bundle, spatial_checkpoint, scenes):
    """30 real layers: the export writes the fused pair with its default tolerance (twice the export's own
    limit for decoder.onnx, from the model's fp32 rounding), and its answers are the PyTorch reference's
    (tokens, confidence within 1e-5, alpha), plain and AdaptVis."""
    from PIL import Image

    from graphs.manifest import Manifest

    record = Manifest.read(spatial_bundle).fused_decoders["fp32"]
    assert record["nodes_per_layer"] == {"plain": 10, "steered": 28}
    assert all(record["parity"][k] <= record["parity_tolerance"][k] / 4 for k in record["parity"])
    vlm, ref = runtime.load(spatial_bundle), Reference(spatial_checkpoint)
    assert vlm.sessions.decoder_choice.flavour == "fused"
    for item in scenes.items[:3]:
        image = Image.open(item.image_path)
        ours = vlm.answer(image, item.question, steering=None, max_new_tokens=6)
        theirs = ref.plain(image, item.question, 6)
        assert ours.token_ids == theirs.token_ids and abs(ours.confidence - theirs.confidence) <= 1e-5
        steered = vlm.answer(image, item.question, steering=runtime.AdaptVis(0.5, 1.5, 0.9), max_new_tokens=6)
        ref_steered = ref.adaptvis(image, item.question, 0.5, 1.5, 0.9, 6)
        assert steered.token_ids == ref_steered.token_ids and steered.alpha == ref_steered.alpha


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="the shipped spatial model answers 'where is the smaller object' whatever the names "
                          "(reversed questions: 0 of 12); see spatial/MODEL_CARD.md")
def test_reads_the_names_reversed_questions_and_distractors(spatial_bundle):
    """Fixed held-out scenes (seed 7), held to the floors `just ship-spatial` ships at
    (fixtures/spatial_ship.py): the names swapped (>= 90 %), a third object standing by (>= 85 %),
    yes/no checks (>= 90 %), and the question without its answer-format suffix answered with a
    relation word.  A model that answers "where is the smaller thing" gets no reversed question
    right (the shipped parameters: 0 of 12).  Only a missed floor is the expected failure
    (``raises=AssertionError``): a crash of the harness fails the test.  The mark goes when
    parameters that read are shipped."""
    from scenes.reading_scenes import reading_set, relation_word_only, score_reading

    vlm = runtime.load(spatial_bundle)
    right, words = {}, {}
    for kind, n in (("reversed", 12), ("distractor", 12), ("yes_no", 10), ("free", 4)):
        for scene, q in reading_set(kind, n, HELD_OUT_SEED, 336):
            text = vlm.answer(scene.render(336), q.text, steering=None, max_new_tokens=6).text
            right.setdefault(kind, []).append(score_reading(q, scene, text))
            words.setdefault(kind, []).append(text.strip().lower().rstrip("."))
    assert sum(right["reversed"]) >= 11, right           # >= 90 % of 12
    assert sum(right["distractor"]) >= 11, right         # >= 85 % of 12
    assert sum(right["yes_no"]) >= 9, right              # >= 90 % of 10
    assert all(relation_word_only(w) for k in ("reversed", "distractor", "free") for w in words[k]), words
    assert set(words["yes_no"]) <= {"yes", "no"}, words
