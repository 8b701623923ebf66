"""measure_image_influence: the first-token distribution with the image vs a blank mean-colour image."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import runtime
from tests.conftest import random_image
from tests.runtime.reference import Reference

QUESTION = "Where is the mug in relation to the plate?"


def _blank(vlm):
    spec = vlm.manifest.preprocessing
    return Image.new("RGB", (spec.crop_width, spec.crop_height), tuple(int(m * 255) for m in spec.image_mean))


def test_influence_matches_the_reference_distributions(bundle_dir, checkpoint_dir):
    vlm = runtime.load(bundle_dir("tiny"))
    ref = Reference(checkpoint_dir("tiny"))
    image = random_image(5)
    ans = vlm.answer(image, QUESTION, steering=None, max_new_tokens=2, measure_image_influence=True)
    with torch.no_grad():
        p = torch.softmax(ref.model(**ref.inputs(image, QUESTION)).logits[0, -1].double(), -1).numpy()
        q = torch.softmax(ref.model(**ref.inputs(_blank(vlm), QUESTION)).logits[0, -1].double(), -1).numpy()
    influence = ans.image_influence
    assert abs(influence.tv_distance - 0.5 * np.abs(p - q).sum()) <= 1e-5
    assert influence.answer_changed == (p.argmax() != q.argmax())
    assert influence.blank_top_token == q.argmax() and abs(influence.blank_confidence - q.max()) <= 1e-5
    assert 0.0 < influence.tv_distance <= 1.0


def test_a_blank_image_has_no_influence(bundle_dir):
    vlm = runtime.load(bundle_dir("tiny"))
    ans = vlm.answer(_blank(vlm), QUESTION, steering=runtime.ScalingVis(2.0), max_new_tokens=2,
                     measure_image_influence=True)
    assert ans.image_influence.tv_distance < 1e-6 and not ans.image_influence.answer_changed
    assert ans.confidence is None                     # ScalingVis still reports no confidence
    assert vlm.answer(_blank(vlm), QUESTION, max_new_tokens=2).image_influence is None


def test_a_given_blank_image_is_used(bundle_dir):
    vlm = runtime.load(bundle_dir("tiny"))
    image = random_image(7)
    same = vlm.answer(image, QUESTION, max_new_tokens=2, measure_image_influence=True, blank_image=image)
    assert same.image_influence.tv_distance < 1e-6
    other = vlm.answer(image, QUESTION, max_new_tokens=2, measure_image_influence=True, blank_image=random_image(8))
    assert other.image_influence.tv_distance > 1e-3
