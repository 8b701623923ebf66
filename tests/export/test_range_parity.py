"""The decoder's parity check by layer range: the same verdicts and numbers as the whole-graph check."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx.external_data_helper import ExternalDataInfo

from export import export_llava
from export.errors import ExportError, ParityError
from export.parity import compare_with_onnx, reference_cases
from export.range_parity import DecoderCutter, decoder_layout
from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder


def _model(checkpoint):
    from transformers import LlavaForConditionalGeneration
    return LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()


def _cases(model, form="scaled-keys"):
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model), "decoder": SteeredDecoder(model, form)}
    return reference_cases(wrappers, model.config, "fp32")


def _no_leftovers(folder):
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("form", ["scaled-keys", "scaled-logits"])
def test_range_check_gives_the_whole_graph_checks_numbers(checkpoint_dir, size, form, tmp_path):
    folder = tmp_path / "bundle"
    export_llava(str(checkpoint_dir(size)), folder, attention_form=form, parity_layers=0, log=lambda m: None)
    cases = _cases(_model(checkpoint_dir(size)), form)
    whole = compare_with_onnx(folder, cases, "fp32").worst
    one = compare_with_onnx(folder, cases, "fp32", decoder_range_layers=1).worst
    budget = compare_with_onnx(folder, cases, "fp32", decoder_range_bytes=1).worst  # every layer alone, by budget
    all_at_once = compare_with_onnx(folder, cases, "fp32", decoder_range_layers=cases.num_layers).worst
    for ranged in (one, budget, all_at_once):
        assert list(ranged) == list(whole)                                          # same keys, same order
        np.testing.assert_allclose([ranged[k] for k in whole], list(whole.values()), rtol=0, atol=1e-6)
    assert _no_leftovers(folder)


def test_both_checks_fail_on_a_corrupted_pytorch_weight(bundle_dir, checkpoint_dir):
    """A wrong layer-0 MLP shows only downstream: in the ranges, through the hidden states chained between them."""
    model = _model(checkpoint_dir("tiny"))
    with torch.no_grad():
        model.model.language_model.layers[0].mlp.down_proj.weight.mul_(1.05)
    cases = _cases(model)
    with pytest.raises(ParityError, match="decoder graph output 'logits' differs"):
        compare_with_onnx(bundle_dir("tiny"), cases, "fp32")
    with pytest.raises(ParityError, match=r"decoder graph output '(logits|present\.1\.(key|value))' differs .* layers 1-1"):
        compare_with_onnx(bundle_dir("tiny"), cases, "fp32", decoder_range_layers=1)
    assert _no_leftovers(bundle_dir("tiny"))


def test_both_checks_fail_on_a_corrupted_onnx_weight(bundle_dir, checkpoint_dir, tmp_path):
    """The range models read the decoder's own data file: a weight changed there is caught by both checks."""
    folder = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), folder)
    graph = onnx.load(str(folder / "decoder.onnx"), load_external_data=False).graph
    consumer = next(n for n in graph.node if n.name.startswith("/layers.1/mlp/up_proj") and n.op_type == "MatMul")
    weight = next(t for t in graph.initializer if t.name in consumer.input)
    info = ExternalDataInfo(weight)
    data = np.memmap(folder / info.location, dtype=np.float32, mode="r+", offset=int(info.offset),
                     shape=(int(info.length) // 4,))
    data *= 1.05
    data.flush()
    del data
    cases = _cases(_model(checkpoint_dir("tiny")))
    with pytest.raises(ParityError, match="'logits' differs"):
        compare_with_onnx(folder, cases, "fp32")
    with pytest.raises(ParityError, match="'logits' differs .* layers 1-1"):
        compare_with_onnx(folder, cases, "fp32", decoder_range_layers=1)
    assert _no_leftovers(folder)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_the_layers_are_found_in_the_graph(checkpoint_dir, dtype, tmp_path):
    folder, lines = tmp_path / "bundle", []
    export_llava(str(checkpoint_dir("tiny")), folder, dtype=dtype, log=lines.append)
    # by default only an fp16 decoder is checked by ranges (ONNX Runtime would cast all of it to fp32)
    ranged = [line for line in lines if line.startswith("parity: decoder checked in")]
    assert len(ranged) == (1 if dtype == "fp16" else 0), lines
    cutter = DecoderCutter(folder / "decoder.onnx", 2)
    assert cutter.layout.hidden[0] == "inputs_embeds" and len(cutter.layout.hidden) == 3
    assert len(cutter.layout.rows) == 2
    assert cutter.plan(layers=1) == [(0, 1), (1, 2)]
    assert cutter.plan(max_bytes=10**12) == [(0, 2)]
    # by budget the last range is filled first: it also holds the LM head
    layer, last = cutter.fp32_bytes(0, 1), cutter.fp32_bytes(1, 2)
    assert last > layer > 0
    assert cutter.plan(max_bytes=last) == [(0, 1), (1, 2)]
    for a, b in [(0, 1), (1, 2)]:
        _, inputs = cutter.closure(a, b)
        assert f"past_key_values.{a}.key" in inputs and f"past_key_values.{1 - a}.key" not in inputs


def test_an_unrecognised_decoder_fails_clearly(bundle_dir, checkpoint_dir, tmp_path):
    """A residual Add written as Sum breaks the chain: a clear ExportError, and the whole-graph check still works."""
    folder = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), folder)
    model = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
    layout = decoder_layout(model, 2)
    residual = next(n for n in model.graph.node if n.output[0] == layout.hidden[1])
    residual.op_type = "Sum"
    onnx.save(model, str(folder / "decoder.onnx"))
    cases = _cases(_model(checkpoint_dir("tiny")))
    with pytest.raises(ExportError, match="not recognised for a check by layer range.*--parity-layers 0"):
        compare_with_onnx(folder, cases, "fp32", decoder_range_layers=1)
    compare_with_onnx(folder, cases, "fp32")
