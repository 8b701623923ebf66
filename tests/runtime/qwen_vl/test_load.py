"""runtime.load on a Qwen bundle answers through LLaVA's public calls: the image prefix reused across questions,
streaming, attention maps on the image's merged grid, image influence, typed errors, and a checked bundle."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
QUESTION = "Where is the mug in relation to the plate?"
OTHER = "Is the mug left of the plate?"


@pytest.fixture(scope="module")
def vlms(qwen_bundle_dir):
    import runtime

    return {size: runtime.load(qwen_bundle_dir(size)) for size in FAMILIES}


def _picture(h=70, w=130, seed=1):
    return Image.fromarray(random_image(seed, h, w))


def _counted(vlm):
    """Count the vision graph's runs on ``vlm``."""
    calls = []
    real = vlm.sessions.features

    def features(image):
        calls.append(image)
        return real(image)
    vlm.sessions.features = features
    return calls


@pytest.mark.parametrize("size", FAMILIES)
def test_questions_on_one_frame_reuse_the_image_prefix(size, vlms, qwen_bundle_dir):
    import runtime

    vlm = vlms[size]
    assert vlm.family.model_type == size.removeprefix("tiny-").replace(".", "_").replace("-", "_")
    vlm.clear_cache()
    calls = _counted(vlm)
    picture = _picture()
    first = vlm.answer(picture, QUESTION)
    second = vlm.answer(picture, OTHER)
    third = vlm.answer(picture, OTHER, steering=runtime.ScalingVis(2.0))
    assert len(calls) == 1                                     # the vision graph ran for the first question only
    assert first.timings.vision > 0 and second.timings.vision == 0 and third.timings.vision == 0
    cold = runtime.load(qwen_bundle_dir(size)).answer(picture, OTHER)
    assert second.token_ids == cold.token_ids and second.text == cold.text
    assert abs(second.confidence - cold.confidence) <= 1e-6
    np.testing.assert_allclose(second.first_token_probs, cold.first_token_probs, atol=1e-6)
    vlm.clear_cache()
    vlm.answer(picture, OTHER)
    assert len(calls) == 2                                     # cleared: computed again
    vlm.answer(_picture(64, 64, seed=2), OTHER)                # another frame: its own features
    assert len(calls) == 3


@pytest.mark.parametrize("size", FAMILIES)
def test_stream_answer_joins_into_the_answer(size, vlms):
    import runtime

    vlm = vlms[size]
    picture = _picture(150, 60, seed=3)
    for steering in (None, runtime.AdaptVis(low=0.5, high=2.0, threshold=0.0)):
        pieces = list(vlm.stream_answer(picture, QUESTION, steering=steering, max_new_tokens=6))
        final = pieces[-1]
        assert isinstance(final, runtime.Answer) and all(isinstance(p, str) for p in pieces[:-1])
        assert "".join(pieces[:-1]) == final.text
        want = vlm.answer(picture, QUESTION, steering=steering, max_new_tokens=6)
        assert final.token_ids == want.token_ids and final.text == want.text
        assert final.confidence == pytest.approx(want.confidence, abs=1e-6) and final.alpha == want.alpha
        assert "".join(vlm.stream(picture, QUESTION, steering=steering, max_new_tokens=6)) == want.text


@pytest.mark.parametrize("size", FAMILIES)
def test_attention_maps_lie_on_the_merged_grid(size, vlms):
    import runtime

    vlm = vlms[size]
    merge = vlm.manifest.vision["merge_size"]
    layers = vlm.manifest.decoder["num_layers"]
    for h, w in ((70, 130), (150, 60)):
        picture = _picture(h, w)
        grid = vlm.images.prepare(picture).grid
        for steering, passes in ((runtime.AdaptVis(), {"confidence", "rescaled"}), (None, {"confidence"}),
                                 (runtime.ScalingVis(2.0), {"rescaled"})):
            answer = vlm.answer(picture, QUESTION, steering=steering, return_attention=True, max_new_tokens=2)
            assert set(answer.attention) == passes
            for maps in answer.attention.values():
                assert maps.maps.shape == (layers, grid[1] // merge, grid[2] // merge)
                assert maps.cls is None and maps.box == (0.0, 0.0, float(w), float(h))
                np.testing.assert_allclose(maps.maps.sum(axis=(1, 2)), maps.image_share, rtol=1e-4, atol=1e-6)
                assert np.all(maps.maps >= 0) and np.all(maps.image_share <= 1 + 1e-5)
        plain = vlm.answer(picture, QUESTION, steering=None, return_attention=True, max_new_tokens=2)
        assert plain.token_ids == vlm.answer(picture, QUESTION, steering=None, max_new_tokens=2).token_ids


@pytest.mark.parametrize("size", FAMILIES)
def test_image_influence_default_steering_and_generate(size, vlms):
    import runtime

    vlm = vlms[size]
    assert vlm.default_steering == runtime.PAPER_DEFAULT           # no calibration.json: the paper's defaults
    picture = _picture(70, 130, seed=4)
    answer = vlm.answer(picture, QUESTION, measure_image_influence=True)
    influence = answer.image_influence
    assert 0 <= influence.tv_distance <= 1 and 0 < influence.blank_confidence <= 1
    same = vlm.answer(picture, QUESTION, measure_image_influence=True, blank_image=picture)
    assert same.image_influence.tv_distance <= 1e-4 and not same.image_influence.answer_changed
    other_size = vlm.answer(picture, QUESTION, measure_image_influence=True, blank_image=_picture(64, 64, seed=9))
    assert 0 <= other_size.image_influence.tv_distance <= 1          # the blank's own grid and prompt
    raw = vlm.manifest.prompt_template.format(question=QUESTION)
    generated = vlm.generate(picture, raw, max_new_tokens=16)
    assert generated.token_ids == vlm.answer(picture, QUESTION, max_new_tokens=16).token_ids


def test_bad_input_is_a_typed_error(vlms):
    from runtime.errors import ImageError, PromptError, SteeringError

    vlm = vlms["tiny-qwen2.5-vl"]
    picture = _picture()
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(PromptError, match="max_new_tokens"):
            vlm.answer(picture, QUESTION, max_new_tokens=bad)
    with pytest.raises(PromptError, match="exceeds the context"):
        vlm.answer(picture, QUESTION, max_new_tokens=vlm.manifest.decoder["max_position_embeddings"])
    with pytest.raises(ImageError, match="at least one merged patch"):
        vlm.answer(_picture(20, 90), QUESTION)
    with pytest.raises(SteeringError):
        vlm.answer(picture, QUESTION, steering="adaptvis")
    with pytest.raises(SteeringError, match="shape"):
        vlm.answer(picture, QUESTION, steering=__import__("runtime").ScalingVis(np.ones((7, 3), np.float32)))
    with pytest.raises(PromptError, match="image placeholder"):
        vlm.answer(picture, "what is <|image_pad|> here?")
    with pytest.raises(PromptError, match="exactly once"):
        vlm.generate(picture, "no image here")
    with pytest.raises(PromptError):
        vlm.answer(picture, "   ")
    assert vlm.answer(picture, QUESTION, max_new_tokens=2).token_ids is not None     # still answers


def _copy(qwen_bundle_dir, tmp_path, size="tiny-qwen2.5-vl"):
    folder = tmp_path / "bundle"
    shutil.copytree(qwen_bundle_dir(size), folder)
    return folder


def _rewrite(folder, edit):
    """Edit manifest.json and sign it again (the digest matches: the field checks must catch it)."""
    from graphs.manifest import MANIFEST_DIGEST_FILE, manifest_digest_line

    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    raw = json.dumps(data, indent=2, sort_keys=True).encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / MANIFEST_DIGEST_FILE).write_text(manifest_digest_line(raw))


def test_a_tampered_qwen_bundle_is_refused(qwen_bundle_dir, tmp_path):
    import runtime
    from runtime.bundle import Bundle
    from runtime.errors import BundleError
    from runtime.families import UnsupportedFamilyError

    folder = _copy(qwen_bundle_dir, tmp_path)
    opened = Bundle.open(folder)
    assert opened.family.model_type == "qwen2_5_vl" and opened.graph("decoder").name == "decoder.onnx"
    data = bytearray((folder / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx does not match its checksum"):
        runtime.load(folder)
    assert runtime.load(folder, verify_checksums=False, decoder="fused") is not None   # checks off: not the digests

    folder = _copy(qwen_bundle_dir, tmp_path / "edited")
    text = (folder / "manifest.json").read_text().replace('"stop_token_ids": [', '"stop_token_ids": [7, ', 1)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="does not match manifest.sha256"):
        runtime.load(folder)

    for field, edit, message in (
            ("tokens", lambda d: d.pop("tokens"), "lacks tokens"),
            ("decoder", lambda d: d["decoder"].pop("num_layers"), "decoder.num_layers must be a positive integer"),
            ("stop_token_ids", lambda d: d.update(stop_token_ids="2"), "stop_token_ids must be"),
            ("graphs", lambda d: d["graphs"]["vision"].update(file="../elsewhere.onnx"), "inside the bundle"),
            ("tokenizer", lambda d: d["files"].update(tokenizer="missing.json"), "missing missing.json"),
            ("sha256", lambda d: d["sha256"].pop("vision.onnx"), "lists no sha256 for vision.onnx")):
        folder = _copy(qwen_bundle_dir, tmp_path / field)
        _rewrite(folder, edit)
        with pytest.raises(BundleError, match=message):
            runtime.load(folder)

    folder = _copy(qwen_bundle_dir, tmp_path / "family")
    _rewrite(folder, lambda d: d.update(family="llama4"))
    with pytest.raises(UnsupportedFamilyError, match="'llama4'.*llava.*qwen2_5_vl.*qwen3_vl"):
        runtime.load(folder)


def test_tensorrt_is_refused_for_a_qwen_bundle(qwen_bundle_dir):
    from runtime.bundle import Bundle
    from runtime.errors import ProviderError
    from runtime.qwen_vl.sessions import QwenSessions

    with pytest.raises(ProviderError, match="no TensorRT"):
        QwenSessions(Bundle.open(qwen_bundle_dir("tiny-qwen2.5-vl")), ["TensorrtExecutionProvider"])
