"""runtime.families: a checkpoint's family from its config, and a typed error naming the supported ones."""
from __future__ import annotations

import json

import pytest

from runtime.errors import BundleError, RuntimeInputError
from runtime.families import FAMILIES, UnsupportedFamilyError, detect_family


@pytest.mark.parametrize("size, model_type", [("tiny", "llava"), ("tiny-qwen2.5-vl", "qwen2_5_vl"),
                                              ("tiny-qwen3-vl", "qwen3_vl")])
def test_fixture_checkpoints_are_detected(size, model_type, checkpoint_dir):
    config = json.loads((checkpoint_dir(size) / "config.json").read_text())
    family = detect_family(config)
    # transformers 4.57's Qwen2_5_VLConfig forwards attributes its text config also has (``architectures``
    # among them) to the text config, so save_pretrained writes them there
    architectures = config.get("architectures") or config["text_config"]["architectures"]
    assert family.model_type == model_type and family.architecture in architectures


def test_qwen_families_differ_where_the_models_do():
    qwen25, qwen3 = FAMILIES["qwen2_5_vl"], FAMILIES["qwen3_vl"]
    assert qwen25.positions == qwen3.positions == "mrope" and FAMILIES["llava"].positions == "1d"
    assert (qwen25.mrope_interleaved, qwen3.mrope_interleaved) == (False, True)
    assert (qwen25.window_attention, qwen3.deepstack) == (True, True)


@pytest.mark.parametrize("config", [{"model_type": "idefics3"}, {}, "llava"])
def test_an_unknown_family_names_the_supported_ones(config):
    with pytest.raises(UnsupportedFamilyError) as caught:
        detect_family(config)
    message = str(caught.value)
    assert "llava (LLaVA-1.5)" in message and "qwen2_5_vl (Qwen2.5-VL)" in message and "qwen3_vl (Qwen3-VL)" in message
    assert isinstance(caught.value, BundleError) and isinstance(caught.value, RuntimeInputError)
