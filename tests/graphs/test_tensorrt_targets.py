"""`python -m graphs check --target ...`: the real parser tables, and a graph made to break each rule fails naming the node."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest
from onnx import TensorProto, helper

from graphs.__main__ import check_bundle, main
from graphs.precision import fp16_problems
from graphs.shape_inputs import shape_input_problems
from graphs.tensorrt_support import check_tensorrt
from graphs.tensorrt_tables import DEFAULT_TARGET, TARGETS, TARGETS_FILE, build_targets

CLEAN = {"vision": [], "embed": [], "decoder": []}


def test_checked_in_targets_are_the_parsed_raw_tables():
    data = json.loads(TARGETS_FILE.read_text())
    assert data == build_targets()
    assert set(data) == {"jetpack6", "jetpack7", "desktop"} and DEFAULT_TARGET == "jetpack6"
    for target in data.values():
        assert target["source"]["repository"] == "https://github.com/onnx/onnx-tensorrt"
        assert target["source"]["commit_date"] and target["note"]
        for op in ("MatMul", "Softmax", "Gather", "Where", "LayerNormalization", "Range", "Expand"):
            assert op in target["supported"], op
    assert data["jetpack6"]["source"]["commit"] == "96e781103cfc4adf4a6bb557e94bac8e693f6f4c"
    assert data["jetpack6"]["table_opset"] == [9, 20] and data["desktop"]["table_opset"] == [9, 24]
    # 10.3 lifted the Slice axes restriction; 10.14/10.15 added Attention, RMSNormalization, ...
    assert "Slice" not in data["jetpack6"]["constant_inputs"] and data["jetpack6"]["constant_inputs"]["Pad"] == ["axes"]
    assert "Attention" in data["desktop"]["supported"] and "Attention" not in data["jetpack7"]["supported"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_tiny_bundles_pass_every_target(bundle_dir, size, target):
    assert check_bundle(bundle_dir(size), target) == CLEAN


def test_newer_operators_pass_only_the_targets_that_parse_them():
    attention = helper.make_model(helper.make_graph(
        [helper.make_node("RMSNormalization", ["x", "w"], ["y"], name="norm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3], [1, 1, 1])]), opset_imports=[helper.make_opsetid("", 18)])
    assert check_tensorrt(attention, target="desktop").ok
    for target in ("jetpack6", "jetpack7"):
        assert check_tensorrt(attention, target=target).problems == \
            [f"norm (RMSNormalization): operator not supported by TensorRT {TARGETS[target].tensorrt} ({target})'s ONNX parser"]


def test_constant_input_restrictions_follow_the_release():
    # Pad's axes must be an initializer in 10.1/10.3, not in 10.15
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    pads = helper.make_tensor("pads", TensorProto.INT64, [2], [1, 1])
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="pad")
    model = helper.make_model(helper.make_graph([node], "g", [x, axes], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                                [pads]), opset_imports=[helper.make_opsetid("", 18)])
    assert any(p.startswith("pad (Pad): input 'axes'") for p in check_tensorrt(model, target="jetpack6").problems)
    assert check_tensorrt(model, target="desktop").ok


# -- a tiny bundle made to break each rule -------------------------------------------------------------


@pytest.fixture
def broken(bundle_dir, tmp_path):
    """A copy of the tiny bundle, and a function that edits its decoder graph in place."""
    folder = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), folder)

    def edit(change):
        path = folder / "decoder.onnx"
        model = onnx.load(str(path), load_external_data=False)
        change(model.graph)
        onnx.save(model, str(path))
        return folder
    return edit


def _some_float_tensor(graph) -> str:
    return next(n.output[0] for n in graph.node if n.op_type == "Softmax")


def test_a_planted_unsupported_operator_is_named(broken, capsys):
    def plant(graph):
        graph.node.append(helper.make_node("Unique", [_some_float_tensor(graph)], ["planted_out"], name="planted/Unique"))
    folder = broken(plant)
    problems = check_bundle(folder)
    assert problems["decoder"] == ["planted/Unique (Unique): operator not supported by TensorRT 10.3 (jetpack6)'s ONNX parser"]
    assert main(["check", str(folder), "--target", "desktop"]) == 1
    out = capsys.readouterr().out
    assert "decoder  FAIL (1)" in out and "- decoder: planted/Unique (Unique): operator not supported by TensorRT 10.15" in out


def test_an_integer_scalar_input_feeding_a_shape_operand_is_named(broken):
    def plant(graph):
        graph.input.append(helper.make_tensor_value_info("max_len", TensorProto.INT64, []))
        graph.initializer.extend([helper.make_tensor("zero", TensorProto.INT64, [], [0]),
                                  helper.make_tensor("one", TensorProto.INT64, [], [1])])
        graph.node.append(helper.make_node("Range", ["zero", "max_len", "one"], ["planted_range"], name="planted/Range"))
    problems = check_bundle(broken(plant))["decoder"]
    assert any(p.startswith("planted/Range (Range): its 'limit' operand comes from the integer scalar input 'max_len'")
               for p in problems), problems


def test_lengths_taken_with_shape_are_fine():
    x = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    nodes = [helper.make_node("Shape", ["n"], ["s"]), helper.make_node("Reshape", ["n", "s"], ["y"], name="ok")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.INT64, None)]))
    assert shape_input_problems(model) == []
    nodes = [helper.make_node("Reshape", ["n", "n"], ["y"], name="bad")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.INT64, None)]))
    assert [p.split(":")[0] for p in shape_input_problems(model)] == ["bad (Reshape)"]


def test_an_fp16_softmax_is_named(broken):
    def plant(graph):
        graph.node.extend([
            helper.make_node("Cast", [_some_float_tensor(graph)], ["planted_half"], to=TensorProto.FLOAT16, name="planted/Cast"),
            helper.make_node("Softmax", ["planted_half"], ["planted_probs"], axis=-1, name="planted/Softmax")])
    problems = check_bundle(broken(plant))["decoder"]
    assert problems == ["planted/Softmax (Softmax): runs on float16 input; softmax and norms must run in float32 "
                        "in an fp16 graph"]


def test_an_fp16_image_key_scaling_is_named():
    """The Mul that applies image_attention_scale must compute in float32."""
    scale = helper.make_tensor_value_info("image_attention_scale", TensorProto.FLOAT, [1, 2, 4])
    keys = helper.make_tensor_value_info("keys", TensorProto.FLOAT16, [1, 4, 5, 8])
    nodes = [helper.make_node("Gather", ["image_attention_scale", "layer"], ["alpha"], axis=1),
             helper.make_node("Unsqueeze", ["alpha", "axes"], ["alpha4"]),
             helper.make_node("Cast", ["alpha4"], ["alpha_half"], to=TensorProto.FLOAT16),
             helper.make_node("Mul", ["keys", "alpha_half"], ["scaled"], name="steer/Mul")]
    inits = [helper.make_tensor("layer", TensorProto.INT64, [], [0]), helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])]
    model = helper.make_model(helper.make_graph(nodes, "g", [scale, keys],
                                                [helper.make_tensor_value_info("scaled", TensorProto.FLOAT16, None)], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    assert fp16_problems(model) == ["steer/Mul (Mul): the image-key scaling runs in float16; it must run in float32"]


def test_dynamic_dims_outside_the_profiles_are_named(broken):
    def plant(graph):
        embeds = next(i for i in graph.input if i.name == "inputs_embeds")
        embeds.type.tensor_type.shape.dim[2].ClearField("dim_value")
        embeds.type.tensor_type.shape.dim[2].dim_param = "hidden_dyn"
        past = next(i for i in graph.input if i.name == "past_key_values.0.key")
        past.type.tensor_type.shape.dim[2].ClearField("dim_param")
    problems = check_bundle(broken(plant))["decoder"]
    assert "input inputs_embeds (graph input): axis 2 is dynamic ('hidden_dyn') where the contract fixes 'hidden': " \
           "the profile pins it to 64" in problems
    assert "input past_key_values.0.key (graph input): axis 2 is dynamic without a name; no profile covers it" in problems


def test_cli_on_a_clean_bundle_exits_zero_and_reports_the_attention_form(bundle_dir, capsys):
    assert main(["check", str(bundle_dir("tiny"))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("target jetpack6: TensorRT 10.3")
    assert "decoder  ok" in out and "attention (" in out and "layer 1" in out


def test_just_check_passes_the_target(bundle_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_justfile import ROOT, _just
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run([_just(), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT),
                          "check", str(Path(bundle_dir("tiny"))), "--target", "jetpack7"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("target jetpack7: TensorRT 10.13")
