"""export.qwen_reference: the PyTorch AdaptVis reference for Qwen2.5-VL and Qwen3-VL on tiny random checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
# (height, width): different grids and token counts, one square, two not
IMAGES = [(64, 64), (70, 130), (150, 60)]
QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def references(checkpoint_dir):
    from export.qwen_reference import QwenReference

    return {size: QwenReference(checkpoint_dir(size)) for size in FAMILIES}


def _image(i):
    h, w = IMAGES[i]
    return Image.fromarray(random_image(i, h, w))


@pytest.mark.parametrize("size", FAMILIES)
def test_alpha_one_gives_the_greedy_tokens_of_transformers_own_generate(size, references, checkpoint_dir):
    from transformers import AutoModelForImageTextToText

    ref = references[size]
    stock = AutoModelForImageTextToText.from_pretrained(checkpoint_dir(size)).eval()   # default attention (sdpa)
    grids = set()
    for i in range(len(IMAGES)):
        inputs = ref.inputs(_image(i), QUESTION)
        grids.add(tuple(inputs["image_grid_thw"][0].tolist()))
        with torch.no_grad():
            out = stock.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=ref.stop_ids,
                                 pad_token_id=ref.tokenizer.pad_token_id)
        want = out[0, inputs["input_ids"].shape[1]:].tolist()
        cut = [want.index(s) for s in ref.stop_ids if s in want]
        want = want[: min(cut)] if cut else want
        assert ref.generate(inputs, alpha=1.0) == want == ref.generate(inputs, alpha=None), (size, i)
    assert len(grids) == len(IMAGES)                                    # three different grids


@pytest.mark.parametrize("size", FAMILIES)
def test_alpha_other_than_one_moves_the_logits(size, references):
    ref = references[size]
    inputs = ref.inputs(_image(1), QUESTION)
    plain = ref.logits(inputs)
    per_layer_head = np.linspace(0.5, 2.0, ref.layers * ref.heads).reshape(ref.layers, ref.heads)
    for alpha in (0.5, 2.0, [0.5, 1.5], per_layer_head):
        assert (ref.logits(inputs, alpha) - plain).abs().max() > 1e-3, alpha
    assert torch.equal(ref.logits(inputs, 1.0), plain)


@pytest.mark.parametrize("size", FAMILIES)
@pytest.mark.parametrize("rows", ["last_token", "after_image"])
def test_only_the_image_keys_of_the_steered_rows_are_scaled(size, rows, references):
    ref = references[size]
    inputs = ref.inputs(_image(2), QUESTION)
    ids = inputs["input_ids"][0]
    is_image = (ids == ref.image_id).numpy()
    trace = []
    with ref.steered(ids, 2.0, rows, trace=trace):
        ref.generate(inputs, alpha=None, max_new_tokens=3)             # the patch alone: prefill + 2 decode steps
    assert [layer for layer, _ in trace] == list(range(ref.layers))   # the prefill's decoder layers only
    first = len(ids) - 1 if rows == "last_token" else int(np.flatnonzero(is_image).max()) + 1
    for _, scaled in trace:
        want = np.zeros(scaled.shape, bool)
        want[first:] = is_image
        assert np.array_equal(scaled.numpy(), want)

    # black box, layer 0 (its input does not depend on alpha): on a steered row, log p moves by one
    # constant over the text keys (only the normaliser changes) and by more on the image keys
    _, plain = ref.logits(inputs, None, rows, output_attentions=True)
    _, steered = ref.logits(inputs, 2.0, rows, output_attentions=True)
    p1, p2 = plain[0][0].double(), steered[0][0].double()              # [H, S, S]
    assert torch.equal(p1[:, :first], p2[:, :first])                  # rows before: untouched
    causal = np.arange(len(ids))
    for row in range(first, len(ids)):
        text_keys = torch.from_numpy(~is_image & (causal <= row))
        shift = (p2[:, row].log() - p1[:, row].log())                   # [H, S]
        text_shift = shift[:, text_keys]
        assert (text_shift - text_shift[:, :1]).abs().max() < 1e-5          # float32 probabilities
        assert (shift[:, torch.from_numpy(is_image)] - text_shift[:, :1]).abs().max() > 1e-3


@pytest.mark.parametrize("size", FAMILIES)
def test_adaptvis_takes_both_branches_on_the_confidence(size, references):
    ref = references[size]
    image = _image(0)
    confidence = ref.plain(image, QUESTION, 3).confidence
    assert 0 < confidence < 1
    low = ref.adaptvis(image, QUESTION, 0.5, 1.5, threshold=min(1.0, confidence + 0.01), max_new_tokens=3)
    high = ref.adaptvis(image, QUESTION, 0.5, 1.5, threshold=max(0.0, confidence - 0.01), max_new_tokens=3)
    assert (low.alpha, high.alpha) == (0.5, 1.5) and low.confidence == high.confidence == confidence
    assert low.token_ids == ref.scalingvis(image, QUESTION, 0.5, 3).token_ids
    assert high.token_ids == ref.scalingvis(image, QUESTION, 1.5, 3).token_ids


def test_a_wrong_alpha_shape_or_rows_is_refused(references):
    ref = references["tiny-qwen3-vl"]
    ids = ref.inputs(_image(0), QUESTION)["input_ids"][0]
    with pytest.raises(ValueError, match=r"\[2\] or \[2, 4\]"):
        with ref.steered(ids, np.ones(3)):
            pass
    with pytest.raises(ValueError, match="rows must be one of"):
        with ref.steered(ids, 1.0, rows="every"):
            pass
