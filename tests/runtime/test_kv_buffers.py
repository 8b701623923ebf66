"""The fused pair's static KV buffers: allocated once, reused by later answers, one fixed decode binding
each (what a captured CUDA graph needs), shared safely between threads; the CUDA-graph settings."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime.fused_decoder import FusedDecoder
from runtime.kv_buffers import CAPACITY_STEP, IDLE_SETS, KVPool
from runtime.sessions import _with_options
from tests.conftest import random_image

QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def vlm(bundle_dir):
    model = runtime.load(bundle_dir("tiny"))
    assert model.sessions.decoder_choice.flavour == "fused"
    return model


def test_later_answers_reuse_the_same_buffers_and_binding(vlm):
    pool = vlm.sessions.runner.pool
    first = vlm.answer(random_image(0), QUESTION, max_new_tokens=6)
    (buffers,) = pool._idle
    pointers = [v.data_ptr() for v in buffers.values] + [buffers.embeds.data_ptr(), buffers.logits.data_ptr()]
    binding = buffers.bindings["decode"]
    again = vlm.answer(random_image(1), QUESTION, max_new_tokens=6)
    assert pool._idle == [buffers]                          # given back, and the only set there is
    assert [v.data_ptr() for v in buffers.values] + [buffers.embeds.data_ptr(), buffers.logits.data_ptr()] == pointers
    assert buffers.bindings["decode"] is binding            # made once, replayed
    assert buffers.capacity % CAPACITY_STEP == 0 or buffers.capacity == vlm.manifest.decoder.max_position_embeddings
    assert first.token_ids and again.token_ids


def test_the_decode_step_reads_the_embedding_its_graph_wrote_in_place(vlm):
    runner = vlm.sessions.runner
    cache = runner.new_cache(8)
    try:
        ones = np.ones((1, vlm.manifest.decoder.num_layers, vlm.manifest.decoder.num_attention_heads), np.float32)
        _, cache, _ = runner.step(vlm.sessions.embeddings(np.array([1, 5, 9], np.int64)), cache, ones,
                                  np.zeros((1, 8), bool), False)
        logits, after = runner.decode(17, cache, ones, None)
        want = vlm.sessions.embeddings(np.array([17], np.int64))
        np.testing.assert_array_equal(cache.buffers.embeds.numpy(), want)
        assert after.length == 4 and cache.buffers.mask.numpy()[0].tolist()[:6] == [1, 1, 1, 1, 0, 0]
        # the same step through a fresh binding of the standard decoder agrees
        standard = runtime.load(vlm.folder, decoder="standard").sessions.runner
        c = standard.new_cache(8)
        _, c, _ = standard.step(vlm.sessions.embeddings(np.array([1, 5, 9], np.int64)), c, ones,
                                np.zeros((1, 8), bool), False)
        theirs, _ = standard.decode(17, c, ones, np.zeros((1, 8), bool))
        assert np.abs(logits - theirs).max() <= 1e-5
    finally:
        runner.release(cache)


def test_answers_in_parallel_threads_each_get_their_own_buffers(vlm):
    images = [random_image(i) for i in range(6)]
    serial = [vlm.answer(im, QUESTION, max_new_tokens=6).token_ids for im in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda im: vlm.answer(im, QUESTION, max_new_tokens=6).token_ids, images))
    assert parallel == serial
    assert len(vlm.sessions.runner.pool._idle) <= IDLE_SETS


def test_the_pool_hands_out_the_smallest_set_that_fits_and_keeps_few():
    made = []

    class Fake:
        def __init__(self, capacity, graph_id):
            self.capacity, self.graph_id = capacity, graph_id
            made.append(self)

    pool = KVPool(Fake, max_capacity=1000)
    a, b, c = pool.acquire(10), pool.acquire(300), pool.acquire(990)
    assert (a.capacity, b.capacity, c.capacity) == (256, 512, 1000)       # rounded up, never past the model
    assert len({s.graph_id for s in made}) == 3                           # one CUDA graph id per set
    for s in (a, b, c):
        pool.release(s)
    assert sorted(s.capacity for s in pool._idle) == [512, 1000]          # the smallest dropped
    assert pool.acquire(200) is b and pool.acquire(1) is c and pool.acquire(1).graph_id == 4


def test_cuda_graph_settings_reach_the_provider_and_the_decode_step(vlm):
    assert _with_options(["CUDAExecutionProvider", "CPUExecutionProvider"], vlm.folder, vlm.manifest, "decoder",
                         cuda_graph=True) == [("CUDAExecutionProvider", {"enable_cuda_graph": "1"}),
                                              "CPUExecutionProvider"]
    assert _with_options(["CPUExecutionProvider"], vlm.folder, vlm.manifest, "decoder", cuda_graph=True) == \
        ["CPUExecutionProvider"]
    s = vlm.sessions
    d = vlm.manifest.decoder
    shape = {"layers": d.num_layers, "kv_heads": d.num_key_value_heads, "head_dim": d.head_dim,
             "hidden": d.hidden_size, "vocab": d.vocab_size}
    runner = s.runner
    graphed = FusedDecoder(s.decoder, s.steered, s.embed, runner.plain_names, runner.steered_names, runner.embed_names,
                           np.float32, "cpu", shape, d.max_position_embeddings, cuda_graph=True)
    assert graphed._prefill_options.get_run_config_entry("gpu_graph_id") == "-1"     # prompts never captured
    ones = np.ones((1, d.num_layers, d.num_attention_heads), np.float32)
    results = []
    for runner in (graphed, s.runner):
        cache = runner.new_cache(8)
        _, cache, _ = runner.step(s.embeddings(np.array([1, 5, 9], np.int64)), cache, ones,
                                  np.zeros((1, 8), bool), False)
        logits, after = runner.decode(17, cache, ones, None)
        results.append(logits)
        if runner is graphed:
            options = after.buffers.bindings["options"]
            assert options.get_run_config_entry("gpu_graph_id") == str(after.buffers.graph_id)
        runner.release(after)
    np.testing.assert_array_equal(results[0], results[1])


def test_cuda_graph_is_off_by_default_and_ignored_on_a_cpu(bundle_dir):
    model = runtime.load(bundle_dir("tiny"), cuda_graph=True)
    assert model.sessions.runner.cuda_graph is False          # the CPU provider captures nothing
    assert runtime.load(bundle_dir("tiny")).sessions.runner.cuda_graph is False
