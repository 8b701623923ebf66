"""The spatial model's parts that need no SmolLM2: scenes, patch cover, LoRA merge, the trained file."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from spatial import lora, smollm2
from spatial.architecture import ANSWERS, LoraShape, VisionShape
from spatial.scenes import CODE_CLASSES, COLOUR_CLASSES, SHAPE_CLASSES, draw, draw_reading, patch_cover
from spatial.train import sincos_positions


def test_training_never_draws_evaluation_seeds():
    with pytest.raises(ValueError, match="evaluation seeds"):
        draw(4, 999, 96, 16)


def test_scenes_are_balanced_and_carry_both_kinds():
    s = draw(400, 1000, 96, 16)
    assert s.pixels.shape == (400, 96, 96, 3) and s.pixels.dtype == np.uint8
    assert np.bincount(s.relation).tolist() == [100, 100, 100, 100]
    assert {"shape", "thing"} == set(s.kinds)
    assert {True, False, None} == set(s.familiar)
    assert all(q.startswith("Where is the ") and q.endswith("Answer with left, right, on or under.")
               for q in s.questions)


def test_reading_scenes_label_every_object():
    with pytest.raises(ValueError, match="evaluation seeds"):
        draw_reading(4, 999, 96, 16)
    s = draw_reading(60, 1000, 96, 16)
    assert s.pixels.shape == (60, 96, 96, 3) and s.cover.shape == (60, 36, 3)
    inverse = {"on": "under", "under": "on", "left_of": "right_of", "right_of": "left_of"}
    for i in range(60):
        a, b, c = (CODE_CLASSES[k] for k in s.code[i])
        assert inverse[a] == b and c == "none"
        n = len(s.words[i])
        assert (s.colour[i, :n] > 0).all() and (s.colour[i, n:] == 0).all() and (s.shape[i, n:] == 0).all()
        assert s.cover[i, :, :n].sum(0).min() > 0 and s.cover[i, :, n:].sum() == 0
        for k, name in enumerate(s.words[i]):
            assert name == f"{COLOUR_CLASSES[s.colour[i, k]]} {SHAPE_CLASSES[s.shape[i, k]]}"
    assert {"whatsup", "free", "yes_no", "what"} == set(s.forms) and 3 in {len(w) for w in s.words}


def test_patch_cover_on_hand_made_boxes():
    # 192 px render, 96 px input, patch 16 -> a patch is 32 render pixels; 3 x 3 grid for 96/32... use 6 x 6
    boxes = ((0, 0, 32, 32), (64, 32, 128, 96))            # A: exactly patch (0, 0); B: patches (1..2, 2..3)
    cover = patch_cover(boxes, 192, 96, 16).reshape(6, 6, 2)
    assert cover[0, 0, 0] == 1.0 and cover[..., 0].sum() == 1.0
    assert cover[1:3, 2:4, 1].tolist() == [[1.0, 1.0], [1.0, 1.0]] and cover[..., 1].sum() == 4.0
    half = patch_cover(((16, 0, 48, 32), (0, 0, 1, 1)), 192, 96, 16).reshape(6, 6, 2)
    assert half[0, 0, 0] == pytest.approx(0.5) and half[0, 1, 0] == pytest.approx(0.5)


def test_lora_merge_equals_the_adapter():
    torch.manual_seed(0)
    layers = torch.nn.ModuleList()
    for _ in range(2):
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        layer.self_attn.q_proj = torch.nn.Linear(12, 12, bias=False)
        layer.self_attn.v_proj = torch.nn.Linear(12, 4, bias=False)
        layers.append(layer)
    model = torch.nn.Module()
    model.layers = layers
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    shape = LoraShape(rank=3, alpha=6.0, targets=("q_proj", "v_proj"))
    adapters = lora.attach(model.layers, shape)
    for a in adapters.values():
        a.B.data.normal_()
    x = torch.randn(5, 12)
    with torch.no_grad():
        want = [model.layers[i].self_attn.v_proj(x) for i in range(2)]
    tensors = lora.adapter_tensors(adapters)
    fresh = torch.nn.Module()
    fresh.layers = torch.nn.ModuleList()
    for i in range(2):
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        layer.self_attn.q_proj = torch.nn.Linear(12, 12, bias=False)
        layer.self_attn.v_proj = torch.nn.Linear(12, 4, bias=False)
        fresh.layers.append(layer)
    fresh.load_state_dict(plain)
    assert lora.merge_into(fresh, tensors, shape) == 4
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(fresh.layers[i].self_attn.v_proj(x), want[i], atol=1e-5, rtol=1e-5)


def test_sincos_positions_distinguish_every_patch():
    p = sincos_positions(6, 192)
    assert p.shape == (37, 192) and torch.all(p[0] == 0)
    d = torch.cdist(p[1:], p[1:])
    assert (d + torch.eye(36) * 10).min() > 0.1


def test_the_committed_parameters_fit_the_architecture():
    from spatial.assemble import WEIGHTS, read_trained

    tensors, vision, shape = read_trained(WEIGHTS)
    # the shipped parameters' adapter (q/v) predates the recipe's (q/k/v/o): assembly reads it from the file
    assert vision == VisionShape() and shape.rank == LoraShape().rank and set(shape.targets) <= set(LoraShape().targets)
    assert WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    lora_keys = [k for k in tensors if k.startswith("lora.")]
    assert len(lora_keys) == 2 * 30 * len(shape.targets)
    assert tensors["multi_modal_projector.linear_2.weight"].shape == (576, 576)
    assert set(ANSWERS) == {"on", "under", "left_of", "right_of"}


def test_missing_parameters_say_how_to_make_them(tmp_path):
    from spatial.assemble import AssemblyError, read_trained

    with pytest.raises(AssemblyError, match="just train-spatial"):
        read_trained(tmp_path / "none.safetensors")


def test_the_gguf_conversion_bar_stays_out_of_a_log_file():
    gguf_reader = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    log, after = io.StringIO(), io.StringIO()               # not terminals
    with smollm2.progress_on_terminals_only():
        for _ in gguf_reader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...", file=log):
            pass
    for _ in gguf_reader.tqdm(range(3), desc="after", file=after):
        pass
    assert log.getvalue() == "" and "after" in after.getvalue()      # off inside, transformers' own bar after
