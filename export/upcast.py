"""Run a torch part in a wider float type one block at a time: no wide copy of the whole part.

Two uses in the parity check (``export/parity.py``):

    fp16 export   the reference computes in float32 on the fp16 weights
    fp32 export   a second run in float64 measures how far float32 itself is from exact
                  arithmetic on these inputs: the scale of the parity tolerance (``export/tolerance.py``)

Every block of the part's layer lists (``nn.ModuleList``: the decoder and CLIP layers, nearly all
the weights), and every other module whose own weights hold ``big`` elements or more (the LM head),
is upcast for its own forward call only and put back after it; the rest (norms, small embeddings)
is upcast while the ``with`` lasts.  Peak: the part plus one wide block and the (small) rest.
"""
from __future__ import annotations

import contextlib

import torch

from runtime.host_memory import available_bytes

BIG = 1 << 20          # elements: a module outside the layer lists this big is upcast per call (the LM head)
# The float64 run's extra memory (one block and the rest, in float64) must leave this fraction of the
# available memory free: activations of a 600-token prompt and the allocator's slack.
FP64_HEADROOM = 2.0


def _blocks(part: torch.nn.Module, big: int) -> tuple[list[torch.nn.Module], list[torch.Tensor]]:
    """(the modules upcast per call, the floating tensors upcast for the whole ``with``)."""
    blocks = [block for m in part.modules() if isinstance(m, torch.nn.ModuleList) for block in m]
    in_lists = {id(m) for block in blocks for m in block.modules()}
    blocks += [m for m in part.modules() if id(m) not in in_lists and not isinstance(m, torch.nn.ModuleList)
               and sum(t.numel() for t in m._parameters.values() if t is not None) >= big]
    in_blocks = {id(t) for block in blocks for t in (*block.parameters(), *block.buffers())}
    rest = [t for module in part.modules() for tensors in (module._parameters, module._buffers)
            for t in tensors.values() if t is not None and id(t) not in in_blocks and t.is_floating_point()]
    return blocks, rest


@contextlib.contextmanager
def upcast_block_by_block(part: torch.nn.Module, dtype: torch.dtype = torch.float32, big: int = BIG):
    """Run ``part`` in ``dtype`` arithmetic, one block upcast at a time (see the module docstring).

    The original storages are kept and put back, never recast: a cast back would allocate a second
    copy while an fp16 checkpoint's memory-mapped pages stay resident (2x the part, measured on 1b).
    A block's wide copies go into buffers kept for the next block of the same shapes (the layers):
    a fresh allocation per call faults in its pages anew, ~15x slower than copying into a kept one.
    """
    blocks, rest = _blocks(part, big)
    saved: dict[int, list] = {}
    pool = _BufferPool(dtype)

    def upcast_tensors(key: int, tensors) -> None:
        saved[key] = [(t, t.data) for t in tensors if t.is_floating_point()]
        for t, data in saved[key]:
            t.data = pool.copy_of(data)

    def restore(key: int) -> None:
        for t, data in saved.pop(key):
            pool.give_back(t.data)
            t.data = data

    def upcast(module, args):            # a hook's return value would replace the inputs: return None
        upcast_tensors(id(module), [*module.parameters(), *module.buffers()])

    def downcast(module, args, output):  # ... or the output
        restore(id(module))

    upcast_tensors(id(part), rest)
    hooks = [h for block in blocks
             for h in (block.register_forward_pre_hook(upcast), block.register_forward_hook(downcast))]
    try:
        yield part
    finally:
        for h in hooks:
            h.remove()
        restore(id(part))
        for key in list(saved):           # a forward that raised inside a block
            restore(key)


class _BufferPool:
    """Wide buffers by shape, reused: ``copy_of(t)`` takes one (or makes it), ``give_back`` returns it."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.free: dict[tuple, list[torch.Tensor]] = {}

    def copy_of(self, t: torch.Tensor) -> torch.Tensor:
        kept = self.free.get(tuple(t.shape))
        buffer = kept.pop() if kept else torch.empty(t.shape, dtype=self.dtype)
        return buffer.copy_(t)

    def give_back(self, buffer: torch.Tensor) -> None:
        self.free.setdefault(tuple(buffer.shape), []).append(buffer)


def fp32_block_by_block(part: torch.nn.Module, big: int = BIG):
    """An fp16 ``part`` computing in float32 (the fp16 export's reference)."""
    return upcast_block_by_block(part, torch.float32, big)


def fp64_fits(part: torch.nn.Module, big: int = BIG) -> bool:
    """Whether a float64 run of ``part`` (one block at a time) fits in the memory available now."""
    blocks, rest = _blocks(part, big)
    largest = max((sum(t.numel() for t in (*b.parameters(), *b.buffers())) for b in blocks), default=0)
    extra = 8 * (largest + sum(t.numel() for t in rest))
    available = available_bytes()
    return available is None or FP64_HEADROOM * extra <= available


@contextlib.contextmanager
def float64_run(part: torch.nn.Module):
    """``part`` computing in float64 end to end: blocks upcast one at a time, and its RMS norms
    (which cast to float32 inside, by design, in transformers' Llama) kept in their input's dtype."""
    norms = [m for m in part.modules() if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")]
    own = {id(m): m.__dict__["forward"] for m in norms if "forward" in m.__dict__}
    for norm in norms:
        norm.forward = _rms_norm_in_input_dtype.__get__(norm)
    try:
        with upcast_block_by_block(part, torch.float64):
            yield part
    finally:
        for norm in norms:
            if id(norm) in own:
                norm.forward = own[id(norm)]
            else:
                del norm.forward


def _rms_norm_in_input_dtype(self, x: torch.Tensor) -> torch.Tensor:
    # x [..., C]: the Llama RMS norm, without its cast to float32
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
