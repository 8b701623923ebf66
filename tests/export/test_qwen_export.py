"""export.qwen_vl via ``python -m export``'s router: Qwen2.5-VL and Qwen3-VL bundles from tiny random checkpoints."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
# grids the export's own parity did not use: square, wide, tall
NEW_GRIDS = ((1, 8, 8), (1, 4, 14), (1, 14, 6))


@pytest.fixture(scope="module")
def bundles(qwen_bundle_dir):
    return {size: qwen_bundle_dir(size) for size in FAMILIES}


@pytest.fixture(scope="module")
def models(checkpoint_dir):
    from transformers import AutoModelForImageTextToText

    return {size: AutoModelForImageTextToText.from_pretrained(checkpoint_dir(size), attn_implementation="eager").eval()
            for size in FAMILIES}


def _session(bundle, name):
    return ort.InferenceSession(str(bundle / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("size", FAMILIES)
def test_bundle_holds_graphs_files_and_a_manifest_with_io_records_and_parity(size, bundles):
    from graphs.qwen_manifest import QwenManifest
    from runtime.bundle import sha256_file

    folder = bundles[size]
    m = QwenManifest.read(folder)
    assert m.family == {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen3-vl": "qwen3_vl"}[size]
    for name in ("vision.onnx", "embed.onnx", "decoder.onnx", "tokenizer.json", "preprocessor_config.json",
                 "chat_template.json"):
        assert (folder / name).is_file() and m.sha256[name] == sha256_file(folder / name), name
    for graph in ("vision", "embed", "decoder"):
        session = _session(folder, graph)
        assert [i.name for i in session.get_inputs()] == m.input_names(graph)
        assert [o.name for o in session.get_outputs()] == m.output_names(graph)
        assert all({"name", "dtype", "dims", "role"} <= set(t) for t in m.graphs[graph]["inputs"])
    assert m.by_role("decoder", "mrope_position_ids") == "position_ids"
    assert m.graphs["decoder"]["inputs"][2]["dims"] == ["3", "batch", "sequence"]
    keys = {"vision", "embed", "decoder", "decoder.present_relative", "decoder.attention"}
    keys |= {"vision.deepstack"} if m.deepstack_layers else set()
    assert set(m.parity) == keys
    for key in keys:
        assert m.parity[key] <= m.parity_tolerance[key], key
    assert m.parity["decoder"] < 1e-4 and m.parity["vision"] < 1e-5
    assert not list(folder.parent.glob(".*partial*"))


@pytest.mark.parametrize("size", FAMILIES)
def test_one_vision_graph_serves_grids_it_was_never_checked_on(size, bundles, models):
    from graphs.qwen_manifest import QwenManifest
    from runtime.qwen_vl.vision_feeds import VisionSpec, vision_feeds

    m = QwenManifest.read(bundles[size])
    spec = VisionSpec(**{k: m.vision[k] for k in ("patch_size", "merge_size", "window_size", "position_grid_side")})
    session, model = _session(bundles[size], "vision"), models[size]
    dim = m.vision["in_channels"] * m.vision["temporal_patch_size"] * m.vision["patch_size"] ** 2
    for grid in NEW_GRIDS:
        pixels = np.random.default_rng(sum(grid)).standard_normal((int(np.prod(grid)), dim)).astype(np.float32)
        got = session.run(None, vision_feeds(pixels, grid, spec))
        with torch.no_grad():
            want = model.model.visual(torch.from_numpy(pixels), torch.tensor([grid]))
        want = [want[0], torch.stack(list(want[1]))] if isinstance(want, tuple) else [want]
        assert got[0].shape == (int(np.prod(grid)) // 4, m.decoder["hidden_size"])
        for key, g, w in zip(("vision", "vision.deepstack"), got, want):
            assert np.abs(g - w.numpy()).max() <= m.parity_tolerance[key], (grid, key)
        assert len(got) == 1 + (m.deepstack_layers > 0)


def _decoder_feeds(m, rng, deepstack_scale=1.0, alpha=1.0):
    d = m.decoder
    s = 6
    feeds = {"inputs_embeds": rng.standard_normal((1, s, d["hidden_size"])).astype(np.float32),
             "attention_mask": np.ones((1, s), np.int64),
             "position_ids": np.broadcast_to(np.arange(s), (3, 1, s)).astype(np.int64).copy(),
             "image_attention_scale": np.full((1, d["num_layers"], d["num_attention_heads"]), alpha, np.float32),
             "image_token_mask": np.array([[False, True, True, True, False, False]])}
    for i in range(d["num_layers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, d["num_key_value_heads"], 0, d["head_dim"]), np.float32)
    if m.deepstack_layers:
        stack = np.zeros((m.deepstack_layers, 1, s, d["hidden_size"]), np.float32)
        stack[:, :, 1:4] = deepstack_scale * np.random.default_rng(7).standard_normal((m.deepstack_layers, 1, 3, d["hidden_size"]))
        feeds["deepstack_embeds"] = stack
    return feeds


@pytest.mark.parametrize("size", FAMILIES)
def test_the_decoder_takes_the_steering_and_deepstack_inputs(size, bundles):
    from graphs.qwen_manifest import QwenManifest

    m = QwenManifest.read(bundles[size])
    session = _session(bundles[size], "decoder")
    logits = lambda **kw: session.run(["logits"], _decoder_feeds(m, np.random.default_rng(0), **kw))[0]
    base = logits()
    assert np.abs(logits(alpha=2.0) - base).max() > 100 * m.parity_tolerance["decoder"]
    if m.deepstack_layers:
        assert np.abs(logits(deepstack_scale=0.0) - base).max() > 100 * m.parity_tolerance["decoder"]


def test_an_unknown_family_is_a_typed_error_naming_the_supported_ones(tmp_path):
    from export.__main__ import main
    from export.errors import UnsupportedModelError
    from export.route import export_model

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError) as e:
        export_model(str(ckpt), tmp_path / "out")
    for family in ("llava", "qwen2_5_vl", "qwen3_vl"):
        assert family in str(e.value)
    assert main([str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_parity_failure_leaves_no_folder(tmp_path, checkpoint_dir, monkeypatch):
    from export.errors import ParityError
    from export.qwen_vl import parity
    from export.route import export_model

    def fail(*args, **kwargs):
        raise ParityError("decoder: 1 > tolerance")

    monkeypatch.setattr(parity, "vision_parity", fail)        # after the three graphs are written
    with pytest.raises(ParityError):
        export_model(str(checkpoint_dir("tiny-qwen2.5-vl")), tmp_path / "out", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_the_qwen_manifest_refuses_a_llava_manifest_and_a_missing_field(tmp_path, bundles):
    from graphs.qwen_manifest import QwenManifest, QwenManifestError

    data = json.loads((bundles["tiny-qwen3-vl"] / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "family": "llava"}))
    with pytest.raises(QwenManifestError, match="not a Qwen family"):
        QwenManifest.read(tmp_path)
    del data["mrope"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(QwenManifestError, match="lacks mrope"):
        QwenManifest.read(tmp_path)


@pytest.mark.parametrize("size", FAMILIES)
def test_the_bundle_writer_signed_the_qwen_bundle(size, bundles, tmp_path):
    """manifest.json is ``sign``'s text, its digest line ``sign``'s line, its sha256 table every file but those two."""
    import hashlib
    import shutil

    from graphs.manifest import manifest_digest_line
    from graphs.qwen_manifest import QwenManifest
    from runtime.bundle import sha256_file
    from runtime.bundle_write import sign

    folder = bundles[size]
    text = (folder / "manifest.json").read_bytes()
    m = QwenManifest.from_dict(json.loads(text))
    assert text == (m.to_json() + "\n").encode()
    assert (folder / "manifest.sha256").read_text() == manifest_digest_line(text)
    files = sorted(p.name for p in folder.iterdir() if p.name not in ("manifest.json", "manifest.sha256"))
    assert sorted(m.sha256) == files and all(m.sha256[f] == sha256_file(folder / f) for f in files)
    assert {"decoder_plain_fp32.onnx", "decoder_steered_fp32.onnx"} <= set(m.sha256)     # the fused pair too
    # signing the same folder again writes the same bytes: the export went through the writer
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in files:
        shutil.copy2(folder / f, copy / f)            # a copy: the session's bundle is quantized by later tests
    sign(copy, m)
    assert hashlib.sha256((copy / "manifest.json").read_bytes()).digest() == hashlib.sha256(text).digest()
    assert (copy / "manifest.sha256").read_bytes() == (folder / "manifest.sha256").read_bytes()


def test_the_writer_refuses_an_unchecked_qwen_manifest_and_writes_nothing(bundles, tmp_path):
    import dataclasses

    from graphs.qwen_manifest import QwenManifest, QwenManifestError
    from runtime.bundle_write import sign

    m = QwenManifest.read(bundles["tiny-qwen2.5-vl"])
    for bad in (dataclasses.replace(m, deepstack_layers="two"),
                dataclasses.replace(m, files={**m.files, "tokenizer": "../tokenizer.json"}),
                dataclasses.replace(m, family="llava")):
        with pytest.raises(QwenManifestError):
            sign(tmp_path, bad)
        assert list(tmp_path.iterdir()) == []
