"""The engines' optimisation profiles: shapes from the contracts and the limits, and the limits' checks."""
from __future__ import annotations

import onnx
import pytest

from runtime.engine_layout import EngineError
from engines.profiles import Limits, engine_limits, engine_profiles
from graphs.contracts import bundle_contracts
from graphs.manifest import Manifest


def test_default_limits_are_the_models_context(bundle_dir):
    m = Manifest.read(bundle_dir("tiny"))
    assert engine_limits(m) == Limits(m.decoder.max_position_embeddings, m.decoder.max_position_embeddings)
    assert engine_limits(m, max_context=48) == Limits(48, 48)
    assert engine_limits(m, max_prompt=40, max_context=48) == Limits(40, 48)


@pytest.mark.parametrize("prompt, context, message", [
    (None, 1, "--max-context must be between 2"),
    (None, 10**6, "--max-context must be between 2"),
    (60, 48, "at most --max-context"),
    (0, None, "more than the image's"),
])
def test_impossible_limits_are_refused(bundle_dir, prompt, context, message):
    m = Manifest.read(bundle_dir("tiny"))
    with pytest.raises(EngineError, match=message):
        engine_limits(m, prompt, context)


def test_prompt_must_hold_the_image(bundle_dir):
    m = Manifest.read(bundle_dir("tiny"))
    with pytest.raises(EngineError, match=f"the image's {m.image_tokens_per_image} tokens"):
        engine_limits(m, max_prompt=m.image_tokens_per_image)
    assert engine_limits(m, max_prompt=m.image_tokens_per_image + 1).max_prompt == m.image_tokens_per_image + 1


def test_decoder_profile_spans_prefill_and_decode(size, bundle_dir):
    m = Manifest.read(bundle_dir(size))
    d = m.decoder
    profiles = engine_profiles(m, Limits(max_prompt=40, max_context=48))
    assert set(profiles) == {"vision", "embed", "decoder"} and all(len(p) == 1 for p in profiles.values())
    dec = profiles["decoder"][0]
    low, opt, high = dec["inputs_embeds"]
    assert low == (1, 1, d.hidden_size) and opt == (1, 1, d.hidden_size) and high == (1, 40, d.hidden_size)
    low, opt, high = dec["past_key_values.0.key"]
    assert low == (1, d.num_key_value_heads, 0, d.head_dim)           # the first prefill: an empty cache
    assert high == (1, d.num_key_value_heads, 47, d.head_dim)
    assert 0 < opt[2] <= 47                                             # tuned for a decode step
    assert dec["attention_mask"] == ((1, 1), (1, opt[2] + 1), (1, 48))
    assert dec["image_token_mask"] == dec["attention_mask"]
    assert dec["position_ids"] == ((1, 1), (1, 1), (1, 40))
    assert dec["image_attention_scale"] == ((1, d.num_layers, d.num_attention_heads),) * 3
    assert profiles["embed"][0]["input_ids"] == ((1, 1), (1, 1), (1, 40))
    pre = m.preprocessing
    assert profiles["vision"][0]["pixel_values"] == ((1, 3, pre.crop_height, pre.crop_width),) * 3


def test_every_graph_input_has_a_range_the_graph_accepts(size, bundle_dir):
    """Each profile names exactly the graph's inputs, with the graph's rank and its fixed dims."""
    folder = bundle_dir(size)
    m = Manifest.read(folder)
    profiles = engine_profiles(m, engine_limits(m))
    for graph, contract in bundle_contracts(m.decoder.num_layers, m.has_attention_outputs).items():
        model = onnx.load(str(folder / m.graphs[graph]), load_external_data=False)
        weights = {t.name for t in model.graph.initializer}
        inputs = {i.name: i for i in model.graph.input if i.name not in weights}
        profile = profiles[graph][0]
        assert set(profile) == set(inputs)
        for name, (low, opt, high) in profile.items():
            dims = inputs[name].type.tensor_type.shape.dim
            assert len(low) == len(opt) == len(high) == len(dims)
            for k, dim in enumerate(dims):
                assert low[k] <= opt[k] <= high[k]
                if dim.HasField("dim_value"):
                    assert low[k] == high[k] == dim.dim_value, (graph, name, k)
