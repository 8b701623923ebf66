"""The explicit TensorRT profiles match the exported graphs and cover every call the runtime makes."""
from __future__ import annotations

import onnx
import pytest

import runtime
from graphs.manifest import Manifest
from graphs.tensorrt_profiles import tensorrt_profile
from runtime.sessions import _with_options
from tests.conftest import random_image

GRAPHS = ("vision", "embed", "decoder")


def _parse(option: str) -> dict[str, tuple[int, ...]]:
    """'a:1x2,b:3' -> {'a': (1, 2), 'b': (3,)}"""
    out = {}
    for entry in option.split(","):
        name, shape = entry.rsplit(":", 1)
        assert name not in out, f"{name} listed twice"
        out[name] = tuple(int(d) for d in shape.split("x"))
    return out


def _profile(manifest: Manifest, graph: str) -> dict[str, dict[str, tuple[int, ...]]]:
    options = tensorrt_profile(manifest, graph)
    return {which: _parse(options[f"trt_profile_{which}_shapes"]) for which in ("min", "opt", "max")}


@pytest.mark.parametrize("graph", GRAPHS)
def test_profiles_name_every_input_with_the_graphs_static_dims(bundle_dir, size, graph):
    folder = bundle_dir(size)
    manifest = Manifest.read(folder)
    profile = _profile(manifest, graph)
    model = onnx.load(str(folder / manifest.graphs[graph]), load_external_data=False)
    inputs = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input}
    assert set(profile["min"]) == set(profile["opt"]) == set(profile["max"]) == set(inputs)
    for name, dims in inputs.items():
        lo, opt, hi = profile["min"][name], profile["opt"][name], profile["max"][name]
        assert len(lo) == len(opt) == len(hi) == len(dims), name
        for k, static in enumerate(dims):
            assert lo[k] <= opt[k] <= hi[k], (name, k)
            if static is not None:                       # a fixed dim of the graph: min = opt = max = it
                assert lo[k] == opt[k] == hi[k] == static, (name, k, static)


def test_every_shape_the_runtime_feeds_lies_inside_the_profiles(bundle_dir, size):
    vlm = runtime.load(bundle_dir(size), decoder="standard")      # what TensorRT runs
    manifest = vlm.manifest
    decoder, embed = _profile(manifest, "decoder"), _profile(manifest, "embed")
    seen = []
    runner = vlm.sessions.runner
    step, embeddings = runner.step, vlm.sessions.embeddings

    def recording_step(embeds, cache, scale, image_mask, attention):
        seen.append(("decoder", embeds.shape[1], cache.length))       # (sequence, past_sequence)
        return step(embeds, cache, scale, image_mask, attention)

    def recording_embeddings(ids):
        seen.append(("embed", len(ids), 0))
        return embeddings(ids)

    runner.step, runner.embed, vlm.sessions.embeddings = recording_step, recording_embeddings, recording_embeddings
    vlm.clear_cache()
    vlm.answer(random_image(0), "Where is the mug?", steering=runtime.AdaptVis(0.5, 2.0, 0.5),
               max_new_tokens=6, measure_image_influence=True)
    assert {g for g, _, _ in seen} == {"decoder", "embed"} and len(seen) > 8
    for graph, seq, past in seen:
        if graph == "decoder":
            shapes = {"inputs_embeds": (1, seq, manifest.decoder.hidden_size), "attention_mask": (1, past + seq),
                      "position_ids": (1, seq), "image_token_mask": (1, past + seq),
                      manifest.past_names()[0]: (1, manifest.decoder.num_key_value_heads, past,
                                                 manifest.decoder.head_dim)}
            profile = decoder
        else:
            shapes, profile = {"input_ids": (1, seq)}, embed
        for name, shape in shapes.items():
            assert all(lo <= s <= hi for lo, s, hi in zip(profile["min"][name], shape, profile["max"][name])), \
                (graph, name, shape, profile["min"][name], profile["max"][name])


def test_only_the_tensorrt_provider_gets_the_profile_and_engine_cache(bundle_dir):
    folder = bundle_dir("tiny")
    manifest = Manifest.read(folder)
    chosen = _with_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"], folder, manifest, "decoder")
    (trt, options), cuda = chosen
    assert trt == "TensorrtExecutionProvider" and cuda == "CUDAExecutionProvider"
    assert options["trt_engine_cache_path"] == str(folder / "trt_engines")
    assert options["trt_profile_max_shapes"] == tensorrt_profile(manifest, "decoder")["trt_profile_max_shapes"]
    assert _with_options(["CPUExecutionProvider"], folder, manifest, "vision") == ["CPUExecutionProvider"]
