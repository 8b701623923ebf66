"""The parity check refuses real defects, by a wide margin, with tolerances that follow fp32 rounding.

Each test plants one defect (``tests/export/defects.py``) in an otherwise correct export of the tiny
checkpoint, in fp32 and in fp16 (``tiny-fp16``: the same shapes, an fp16 checkpoint exported in its own
dtype), and expects a ParityError that names the output and says how far beyond the tolerance it
is.  A correct export sits well below its tolerance (test_export_parity); a defect sits far above it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from export import export_llava
from export.errors import ParityError
from export.parity import compare_with_onnx, reference_cases
from export.tolerance import FP16_MEASURED, MEASURED
from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

from . import defects

# dtype: (checkpoint, a defect's difference / the tolerance at least, the rule); measured: docs/export-parity.md
DTYPES = {"fp32": ("tiny", 100, MEASURED), "fp16": ("tiny-fp16", 2, FP16_MEASURED)}


@pytest.fixture(scope="module")
def cases(checkpoint_dir):
    import torch
    from transformers import LlavaForConditionalGeneration

    made = {}

    def get(dtype: str):
        if dtype not in made:
            model = LlavaForConditionalGeneration.from_pretrained(
                checkpoint_dir(DTYPES[dtype][0]), attn_implementation="eager",
                dtype=torch.float16 if dtype == "fp16" else torch.float32).eval()
            wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model),
                        "decoder": SteeredDecoder(model)}
            made[dtype] = reference_cases(wrappers, model.config, dtype)
        return made[dtype]
    return get


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("defect", sorted(defects.TRACED))
def test_export_refuses_a_graph_that_steers_or_masks_wrongly(defect, dtype, checkpoint_dir, tmp_path, monkeypatch):
    size, margin, rule = DTYPES[dtype]
    with defects.while_tracing(monkeypatch, defects.TRACED[defect]), pytest.raises(ParityError) as error:
        export_llava(str(checkpoint_dir(size)), tmp_path / "bundle", log=lambda m: None)
    message = str(error.value)
    assert "decoder graph output" in message and rule in message
    assert defects.times_tolerance(message) >= margin, message
    assert list(tmp_path.iterdir()) == []                       # no bundle left behind
    print(f"\n{defect} ({dtype}): {message}")


WEIGHT_DEFECTS = {
    # name: (graph, how to plant it in a copy of the bundle)
    "K and V projections swapped (decoder layer 1)": ("decoder", lambda f: defects.swap_weights(
        f, "decoder", defects.weight_name(f, "decoder", r"layers\.1/self_attn/k_proj"),
        defects.weight_name(f, "decoder", r"layers\.1/self_attn/v_proj"))),
    "gate and up projections swapped (decoder layer 0)": ("decoder", lambda f: defects.swap_weights(
        f, "decoder", defects.weight_name(f, "decoder", r"layers\.0/mlp/gate_proj"),
        defects.weight_name(f, "decoder", r"layers\.0/mlp/up_proj"))),
    "a 4 KiB page of a weight zeroed (decoder layer 0 down_proj)": ("decoder", lambda f: defects.overwrite_weight(
        f, "decoder", defects.weight_name(f, "decoder", r"layers\.0/mlp/down_proj"),
        lambda w: w.__setitem__(slice(1024, 2048), 0.0))),
    "one weight's sign flipped (decoder layer 1 o_proj)": ("decoder", lambda f: defects.overwrite_weight(
        f, "decoder", defects.weight_name(f, "decoder", r"layers\.1/self_attn/o_proj"),
        lambda w: w.__setitem__(int(np.argmax(np.abs(w))), -w[int(np.argmax(np.abs(w)))]))),
    "one weight's sign flipped (vision fc2)": ("vision", lambda f: defects.overwrite_weight(
        f, "vision", defects.weight_name(f, "vision", r"layers\.0/mlp/fc2"),
        lambda w: w.__setitem__(int(np.argmax(np.abs(w))), -w[int(np.argmax(np.abs(w)))]))),
}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("defect", sorted(WEIGHT_DEFECTS))
def test_parity_refuses_a_swapped_or_corrupted_weight(defect, dtype, bundle_dir, cases, tmp_path):
    graph, plant = WEIGHT_DEFECTS[defect]
    size, margin, _ = DTYPES[dtype]
    folder = defects.copy_bundle(bundle_dir(size), tmp_path / "bundle")
    compare_with_onnx(folder, cases(dtype), dtype)              # the copy passes before the defect
    plant(folder)
    with pytest.raises(ParityError, match=f"{graph} graph output") as error:
        compare_with_onnx(folder, cases(dtype), dtype)
    assert defects.times_tolerance(str(error.value)) >= margin, str(error.value)
    print(f"\n{defect} ({dtype}): {error.value}")


def test_the_correct_export_sits_well_inside_its_tolerances(bundle_dir, size):
    """The other side of the margin: a correct export's differences against the limits it was held to."""
    manifest = json.loads((bundle_dir(size) / "manifest.json").read_text())
    for key, diff in manifest["parity"].items():
        assert diff <= manifest["parity_tolerance"][key] / 2, (key, diff, manifest["parity_tolerance"][key])
