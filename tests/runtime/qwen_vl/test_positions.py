"""runtime.qwen_vl.positions and rope against transformers: get_rope_index, the decode positions generate
feeds, and the rotary's cos/sin (chunked and interleaved sections)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from runtime.errors import PromptError
from runtime.qwen_vl.layout import expand_image_tokens
from runtime.qwen_vl.positions import VisionTokens, decode_positions, rope_index
from runtime.qwen_vl.rope import axis_of_frequency, inv_freq, mrope_cos_sin

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")


def _model_class(config):
    from transformers import Qwen2_5_VLModel, Qwen3VLModel

    return Qwen2_5_VLModel if config.model_type == "qwen2_5_vl" else Qwen3VLModel


@pytest.fixture(scope="module")
def configs(checkpoint_dir):
    from transformers import AutoConfig

    return {size: AutoConfig.from_pretrained(checkpoint_dir(size)) for size in FAMILIES}


def _prompt(tokens: VisionTokens, grids, merge: int, text=(20, 21, 22)) -> list[int]:
    """[text] ([vision_start, image, vision_end, text] per image), expanded."""
    ids = list(text)
    for _ in grids:
        ids += [tokens.vision_start, tokens.image, tokens.vision_start + 1, *text]
    return expand_image_tokens(ids, tokens.image, grids, merge).tolist()


def _transformers(config, ids, grids, mask=None):
    holder = SimpleNamespace(config=config)
    pos, delta = _model_class(config).get_rope_index(
        holder, torch.tensor(ids), None if grids is None else torch.tensor(grids), None,
        attention_mask=None if mask is None else torch.tensor(mask))
    return pos.numpy(), delta.numpy()


CASES = [[(1, 4, 6)], [(1, 6, 4)], [(1, 2, 2)], [(1, 8, 14), (1, 4, 4)], []]


@pytest.mark.parametrize("size", FAMILIES)
def test_rope_index_equals_get_rope_index(size, configs):
    config = configs[size]
    tokens, merge = VisionTokens.from_config(config.to_dict()), config.vision_config.spatial_merge_size
    for grids in CASES:
        ids = [_prompt(tokens, grids, merge)]
        want_pos, want_delta = _transformers(config, ids, grids or None)
        pos, delta = rope_index(np.array(ids), np.array(grids) if grids else None, tokens, merge)
        assert np.array_equal(pos, want_pos) and np.array_equal(delta, want_delta), grids
        if grids:
            assert delta[0, 0] <= 0 and len(set(map(tuple, pos[:, 0].T))) == pos.shape[-1]   # image rows differ per axis


@pytest.mark.parametrize("size", FAMILIES)
def test_rope_index_of_a_left_padded_batch_equals_get_rope_index(size, configs):
    config = configs[size]
    tokens, merge = VisionTokens.from_config(config.to_dict()), config.vision_config.spatial_merge_size
    rows = [_prompt(tokens, [(1, 4, 6)], merge), _prompt(tokens, [(1, 2, 4)], merge, text=(30,))]
    width = max(map(len, rows))
    ids = [[0] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    grids = [(1, 4, 6), (1, 2, 4)]
    want_pos, want_delta = _transformers(config, ids, grids, mask)
    pos, delta = rope_index(np.array(ids), np.array(grids), tokens, merge, np.array(mask))
    assert np.array_equal(pos, want_pos) and np.array_equal(delta, want_delta)


@pytest.mark.parametrize("size", FAMILIES)
def test_prefill_and_decode_positions_are_what_generate_feeds_the_decoder(size, checkpoint_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(checkpoint_dir(size)).eval()
    config, visual = model.config, model.model.visual
    tokens, merge = VisionTokens.from_config(config.to_dict()), config.vision_config.spatial_merge_size
    grid = (1, 6, 4)
    ids = _prompt(tokens, [grid], merge)
    patch = visual.config.patch_size
    pixels = torch.randn(int(np.prod(grid)), 3 * 2 * patch * patch)
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True)
    with torch.no_grad():
        model.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, image_grid_thw=torch.tensor([grid]),
                       max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    hook.remove()
    positions, delta = rope_index(np.array([ids]), np.array([grid]), tokens, merge)
    # Qwen2.5-VL's generate puts the flat cache positions first ([4, B, S]: that row only shapes the causal mask)
    seen = [p[1:] if p.shape[0] == 4 else p for p in seen]
    assert np.array_equal(seen[0].numpy(), positions)
    assert len(seen) == 4
    for step, got in enumerate(seen[1:]):
        assert np.array_equal(got.numpy(), decode_positions(delta, len(ids) + step)), step


@pytest.mark.parametrize("size", FAMILIES)
def test_mrope_cos_sin_equal_the_decoders_rotary(size, checkpoint_dir, configs):
    from transformers import AutoModelForImageTextToText

    config = configs[size]
    text = config.text_config
    model = AutoModelForImageTextToText.from_pretrained(checkpoint_dir(size)).eval()
    tokens, merge = VisionTokens.from_config(config.to_dict()), config.vision_config.spatial_merge_size
    grids = [(1, 8, 14)]
    ids = [_prompt(tokens, grids, merge)]
    positions, _ = rope_index(np.array(ids), np.array(grids), tokens, merge)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    section = text.rope_scaling["mrope_section"]
    interleaved = bool(text.rope_scaling.get("mrope_interleaved", False))
    cos, sin = mrope_cos_sin(positions, inv_freq(head_dim, text.rope_theta), axis_of_frequency(section, interleaved))
    x = torch.zeros(1, len(ids[0]), text.hidden_size)
    with torch.no_grad():
        t_cos, t_sin = model.model.language_model.rotary_emb(x, torch.from_numpy(positions))
    q = torch.randn(1, 2, len(ids[0]), head_dim)
    if interleaved:                                     # Qwen3-VL: the rotary gives the chosen cos/sin
        from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb
        want, _ = apply_rotary_pos_emb(q, q, t_cos, t_sin)
    else:                                               # Qwen2.5-VL: chosen per section inside the attention
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_multimodal_rotary_pos_emb
        want, _ = apply_multimodal_rotary_pos_emb(q, q, t_cos, t_sin, section)
    qn = q.numpy()
    half = head_dim // 2
    rotated = np.concatenate([-qn[..., half:], qn[..., :half]], axis=-1)
    got = qn * cos[:, None] + rotated * sin[:, None]    # [1, 2, S, D]
    np.testing.assert_allclose(got, want.numpy(), atol=2e-6, rtol=0)


def test_axis_of_frequency_layouts():
    assert axis_of_frequency([2, 3, 3], False).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert axis_of_frequency([4, 2, 2], True).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
    real = axis_of_frequency([24, 20, 20], True)                       # Qwen3-VL's
    assert real.tolist()[:6] == [0, 1, 2, 0, 1, 2] and real.tolist()[60:] == [0] * 4
    assert np.bincount(real).tolist() == [24, 20, 20]


def test_prompts_and_grids_that_disagree_are_prompt_errors():
    tokens = VisionTokens(image=5, video=6, vision_start=3)
    ids = np.array([[1, 3, 5, 5, 5, 4, 9]])                                # 3 image tokens
    with pytest.raises(PromptError, match="needs 4 image tokens"):
        rope_index(ids, np.array([[1, 4, 4]]), tokens, 2)
    with pytest.raises(PromptError, match="more images than the 0 grids"):
        rope_index(ids, np.zeros((0, 3), np.int64), tokens, 2)
    with pytest.raises(PromptError, match="video"):
        rope_index(np.array([[3, 6, 6, 4]]), np.array([[1, 2, 2]]), tokens, 2)
    with pytest.raises(PromptError, match="2 image grids"):
        rope_index(np.array([[1, 3, 5, 4]]), np.array([[1, 2, 2], [1, 2, 2]]), tokens, 2)
    with pytest.raises(PromptError, match="2 image placeholders for 1 images"):
        expand_image_tokens([3, 5, 4, 3, 5, 4], 5, [(1, 2, 2)], 2)
