"""Logits that come out NaN or infinite are an error in every decode path, never an answer of token 0."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import runtime
from runtime import model as model_module
from runtime.errors import BundleError, NumericalError, RuntimeInputError
from tests.conftest import random_image
from tests.manifest_edit import plant_file

QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def vlm(bundle_dir):
    return runtime.load(bundle_dir("tiny"))


@pytest.fixture(scope="module")
def baseline(vlm):
    return vlm.answer(random_image(0), QUESTION, steering=None, max_new_tokens=6)


@pytest.fixture(scope="module")
def n(vlm):
    return len(vlm.prompts.from_question(QUESTION).ids)          # prompt tokens, the image's included


def _still_usable(vlm, baseline):
    again = vlm.answer(random_image(0), QUESTION, steering=None, max_new_tokens=6)
    assert again.token_ids == baseline.token_ids and again.confidence == baseline.confidence


def _plant(monkeypatch, vlm, when, value=np.nan):
    """Make the decoder's logits non-finite on the calls where ``when(embeds, cache_length, scale)`` holds
    (a decode step: one row of embeddings)."""
    runner = vlm.sessions.runner
    real_step, real_decode = runner.step, runner.decode

    def planted(logits, embeds, length, scale):
        if when(embeds, length, scale):
            logits = logits.copy()
            logits[::7] = value                 # some of them: argmax would still pick a finite one
        return logits

    def step(embeds, cache, scale, image_mask, attention):
        logits, after, rows = real_step(embeds, cache, scale, image_mask, attention)
        return planted(logits, embeds, cache.length, scale), after, rows

    def decode(token, cache, ones, image_mask):
        logits, after = real_decode(token, cache, ones, image_mask)
        return planted(logits, np.zeros((1, 1, 0), np.float32), cache.length, ones), after
    monkeypatch.setattr(runner, "step", step)
    monkeypatch.setattr(runner, "decode", decode)


def test_the_tiny_bundle_answers_more_than_one_token(baseline):
    assert len(baseline.token_ids) >= 3          # so decoding steps 2 and 3 below exist


def test_an_alpha_past_the_range_really_makes_nan_and_is_caught(monkeypatch, vlm, baseline):
    """With the range check bypassed, alpha 1e38 reaches the decoder: its NaN is an error, not '' / [0, 0, 0, 0]."""
    monkeypatch.setattr(model_module, "scale_tensor", lambda alpha, layers, heads:
                        np.full((1, layers, heads), 1e38, np.float32))
    with pytest.raises(NumericalError, match="after the rescaled pass hold .* NaN or infinite values .* with alpha 2"
                                             ".*no answer is given") as e:
        vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(2.0), max_new_tokens=4)
    assert e.value.steered and isinstance(e.value, RuntimeInputError)
    monkeypatch.undo()
    _still_usable(vlm, baseline)


STEERINGS = {"adaptvis": runtime.AdaptVis(0.5, 1.5, 0.3), "scalingvis": runtime.ScalingVis(1.5), "none": None}


@pytest.mark.parametrize("steering", list(STEERINGS))
def test_the_first_tokens_passes(monkeypatch, vlm, baseline, n, steering):
    chosen = STEERINGS[steering]
    _plant(monkeypatch, vlm, lambda embeds, length, scale: length == n - 1 and np.all(scale == 1))
    if chosen is not None and isinstance(chosen, runtime.ScalingVis):   # no confidence pass to spoil
        assert vlm.answer(random_image(0), QUESTION, steering=chosen, max_new_tokens=2).token_ids
    else:
        with pytest.raises(NumericalError, match="after the confidence pass \\(alpha = 1\\)") as e:
            vlm.answer(random_image(0), QUESTION, steering=chosen, max_new_tokens=2)
        assert not e.value.steered and "weights or its number format" in str(e.value)
    monkeypatch.undo()
    if chosen is not None:
        _plant(monkeypatch, vlm, lambda embeds, length, scale: not np.all(scale == 1), value=np.inf)
        with pytest.raises(NumericalError, match="after the rescaled pass .* with alpha 1.5: try an alpha closer"):
            vlm.answer(random_image(0), QUESTION, steering=chosen, max_new_tokens=2)
        monkeypatch.undo()
    _still_usable(vlm, baseline)


DECODERS = {
    "answer": lambda vlm, image: vlm.answer(image, QUESTION, max_new_tokens=6),
    "generate": lambda vlm, image: vlm.generate(image, f"USER: <image>\n{QUESTION} ASSISTANT:", max_new_tokens=6),
    "stream": lambda vlm, image: list(vlm.stream(image, QUESTION, max_new_tokens=6)),
    "stream_answer": lambda vlm, image: list(vlm.stream_answer(image, QUESTION, max_new_tokens=6)),
}


@pytest.mark.parametrize("path", list(DECODERS))
def test_a_decoding_step(monkeypatch, vlm, baseline, n, path):
    """The logits for the second generated token are NaN: an error, not a truncated or made-up answer."""
    _plant(monkeypatch, vlm, lambda embeds, length, scale: length == n)
    with pytest.raises(NumericalError, match="after the step for generated token 2 hold"):
        DECODERS[path](vlm, random_image(0))
    monkeypatch.undo()
    _still_usable(vlm, baseline)


def test_a_stream_stops_with_the_error_after_what_it_gave(monkeypatch, vlm, n):
    _plant(monkeypatch, vlm, lambda embeds, length, scale: length == n + 2, value=-np.inf)
    pieces = vlm.stream_answer(random_image(0), QUESTION, max_new_tokens=6)
    got = []
    with pytest.raises(NumericalError, match="after the step for generated token 4"):
        for piece in pieces:
            got.append(piece)
    assert got and all(isinstance(p, str) for p in got)       # the first tokens' text, then the error: no Answer


def test_the_blank_image_pass(monkeypatch, vlm, baseline, n):
    _plant(monkeypatch, vlm, lambda embeds, length, scale: length == 0 and embeds.shape[1] == n)
    with pytest.raises(NumericalError, match="after the blank-image pass"):
        vlm.answer(random_image(0), QUESTION, measure_image_influence=True, max_new_tokens=2)
    monkeypatch.undo()
    _still_usable(vlm, baseline)


@pytest.mark.parametrize("field, value", [("alpha_high", 1e38), ("alpha_low", 1e-40), ("alpha_high", [1.0, 1e38])])
def test_a_calibration_json_alpha_out_of_range_is_refused_at_load(bundle_dir, tmp_path, field, value):
    bundle = shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")
    chosen = {"alpha_low": 0.5, "alpha_high": 1.5, "threshold": 0.4} | {field: value}
    plant_file(bundle, "calibration.json", json.dumps({"adaptvis": chosen}).encode())      # resealed by hand
    with pytest.raises(BundleError, match=r"calibration.json is malformed .*must lie in \[0.01, 100\]"):
        runtime.load(bundle)
