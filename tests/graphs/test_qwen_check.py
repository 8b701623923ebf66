"""python -m graphs check on a Qwen bundle: per graph, whether TensorRT's parser could take it (a static check)."""
from __future__ import annotations

import json
import shutil

import pytest

from graphs.__main__ import main
from graphs.qwen_check import check_qwen_bundle

SIZE = "tiny-qwen3-vl"


@pytest.fixture(scope="module")
def bundle(qwen_bundle_dir):
    return qwen_bundle_dir(SIZE)


def test_the_standard_graphs_pass_and_the_fused_pair_is_onnx_runtime_only(bundle, capsys):
    verdicts = {v.graph: v for v in check_qwen_bundle(bundle, "jetpack6")}
    assert list(verdicts) == ["vision", "embed", "decoder", "fused fp32 plain", "fused fp32 steered"]
    for name in ("vision", "embed", "decoder"):
        v = verdicts[name]
        assert v.parser_takes_it and v.contract_ok and not v.contrib_ops and not v.fails, (name, v.problems)
    for name in ("fused fp32 plain", "fused fp32 steered"):
        v = verdicts[name]
        assert not v.parser_takes_it and "GroupQueryAttention" in v.contrib_ops and not v.fails
    assert "RotaryEmbedding" in verdicts["fused fp32 steered"].contrib_ops
    assert main(["check", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "static check" in out and "TensorRT itself was not run" in out
    assert out.count("TensorRT parser: yes") == 3 and out.count("TensorRT parser: no (com.microsoft") == 2


def test_a_quantized_decoder_is_flagged_for_tensorrt(bundle, tmp_path, capsys):
    from quantize import quantize_bundle

    quantize_bundle(bundle, tmp_path / "int4", to="int4", log=lambda m: None)
    verdicts = {v.graph: v for v in check_qwen_bundle(tmp_path / "int4", "jetpack7")}
    assert "MatMulNBits" in verdicts["decoder"].contrib_ops and verdicts["decoder"].fails
    assert verdicts["vision"].parser_takes_it and not verdicts["vision"].fails
    assert not verdicts["fused fp32 plain"].fails and "MatMulNBits" in verdicts["fused fp32 plain"].contrib_ops
    assert main(["check", str(tmp_path / "int4"), "--target", "jetpack7"]) == 1
    assert "decoder.onnx: TensorRT parser: no (com.microsoft MatMulNBits" in capsys.readouterr().out


def test_a_graph_off_its_manifest_fails_and_a_broken_manifest_is_exit_2(bundle, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["graphs"]["embed"]["inputs"][0]["name"] = "token_ids"
    (copy / "manifest.json").write_text(json.dumps(data))
    assert main(["check", str(copy)]) == 1
    assert "embed.onnx: TensorRT parser: yes, IO off the manifest  FAIL" in capsys.readouterr().out
    (copy / "manifest.json").write_text(json.dumps({**data, "deepstack_layers": "two"}))
    assert main(["check", str(copy)]) == 2
    assert "deepstack_layers" in capsys.readouterr().err
