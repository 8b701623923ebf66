"""fp16 exports: the PyTorch reference runs in fp32 arithmetic, one upcast block at a time."""
from __future__ import annotations

import copy

import torch
from transformers import LlavaForConditionalGeneration

from export.upcast import fp32_block_by_block
from export.wrappers import VisionEncoder


def test_an_fp16_part_computes_in_fp32_with_one_fp32_block_at_a_time(checkpoint_dir):
    half = LlavaForConditionalGeneration.from_pretrained(checkpoint_dir("tiny"), dtype=torch.float16,
                                                         attn_implementation="eager").eval()
    full = copy.deepcopy(half).float()                   # the same fp16-rounded weights, all in fp32
    part, reference = VisionEncoder(half), VisionEncoder(full)
    blocks = list(part.layers)
    assert len(blocks) >= 1
    fp32_blocks_seen = []

    def count_fp32_blocks(module, args):
        fp32_blocks_seen.append(sum(any(p.dtype == torch.float32 for p in b.parameters()) for b in blocks))

    storages = {name: p.data_ptr() for name, p in part.named_parameters()}
    pixels = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(0))      # [1, 3, H, W]
    with torch.no_grad(), fp32_block_by_block(part):
        watchers = [b.register_forward_pre_hook(count_fp32_blocks) for b in blocks]     # after the upcast hooks
        got = part(pixels)                                                              # [1, T, C]
        for w in watchers:
            w.remove()
        want = reference(pixels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert fp32_blocks_seen == [1] * len(blocks)          # each block upcast only while it runs
    assert all(p.dtype == torch.float16 for b in blocks for p in b.parameters())   # and cast back after it
    assert all(p.dtype == torch.float16 for p in part.parameters())             # all of it, once the with ends
    # the fp16 storages themselves are put back, not recast copies (a copy would double the memory)
    assert {name: p.data_ptr() for name, p in part.named_parameters()} == storages


def test_a_big_module_outside_the_layer_lists_is_upcast_for_its_call_only(checkpoint_dir):
    """The LM head (here: any module of >= 1000 own elements) is fp32 only while it runs."""
    from export.wrappers import SteeredDecoder

    half = LlavaForConditionalGeneration.from_pretrained(checkpoint_dir("tiny"), dtype=torch.float16,
                                                         attn_implementation="eager").eval()
    full = copy.deepcopy(half).float()
    part, reference = SteeredDecoder(half), SteeredDecoder(full)
    head_dtypes = []
    embeds = torch.randn(1, 5, half.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    layers, heads = half.config.text_config.num_hidden_layers, half.config.text_config.num_attention_heads
    head_dim = half.config.text_config.hidden_size // heads
    past = [torch.zeros(1, half.config.text_config.num_key_value_heads, 0, head_dim) for _ in range(2 * layers)]
    args = (torch.ones(1, 5, dtype=torch.int64), torch.arange(5)[None], past, torch.ones(1, layers, heads),
            torch.zeros(1, 5, dtype=torch.bool))
    with torch.no_grad(), fp32_block_by_block(part, big=1000):
        assert half.lm_head.weight.dtype == torch.float16                 # not for the whole block
        watch = half.lm_head.register_forward_pre_hook(lambda m, a: head_dtypes.append(m.weight.dtype))
        got = part(embeds, *args)[0]                                      # logits [1, V]
        watch.remove()
        want = reference(embeds, *args)[0]
    assert head_dtypes == [torch.float32]
    assert half.lm_head.weight.dtype == torch.float16
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
