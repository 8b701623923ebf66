"""Which nodes of an exported graph must not lose precision, found from the graph's structure.

Node names are never matched: the sets come from where the tensors flow.

    steering + mask  every node on a path from ``image_attention_scale``, ``image_token_mask`` or
                     ``attention_mask`` to a Softmax, and the Softmax: the Where that picks alpha per
                     key, the Mul on the logits, the additive mask and its Where
    attention out    from a Softmax to an output other than ``logits`` (``last_row_attention``,
                     ``image_attention_share``: float32 in every export)
    RMSNorm          Pow(x, 2) -> ReduceMean -> ... -> Mul(x, .), the Cast that made x, and the Casts
                     and the weight Mul after it
    rotary angles    every node on a path from ``position_ids`` to Cos/Sin, and Cos/Sin: position x
                     inv_freq in fp16 is off by up to 0.25 rad at position 1000
    LM head          the last MatMul with a constant weight before ``logits``
    feeders          Constant / Identity-of-a-weight nodes whose every consumer is kept

``kept_fp32`` is what the fp16 conversion blocks; ``steering_path`` is also what the tests
compare between a source graph and its quantized copy.
"""
from __future__ import annotations

from collections import defaultdict, deque

import onnx

from graphs.contracts import STEERING_INPUTS

MASK_INPUT = "attention_mask"
POSITION_INPUT = "position_ids"
LOGITS_OUTPUT = "logits"
NORM_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
            "SkipSimplifiedLayerNormalization", "RMSNormalization")
# Kept fp32 by type wherever they are (graphs.precision.FRAGILE_OPS, and the norms ONNX has as one op).
FP32_OPS = ("Softmax", "ReduceMean", "Pow", *NORM_OPS)


class Index:
    """Producers and consumers of every tensor of one graph (no subgraphs: the exporter writes none)."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.nodes = {n.name: n for n in graph.node}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.initializers = {t.name for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}

    def is_constant(self, name: str) -> bool:
        if name in self.initializers:
            return True
        p = self.producer.get(name)
        return p is not None and (p.op_type == "Constant"
                                  or (p.op_type == "Identity" and p.input[0] in self.initializers))


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every unnamed (or duplicate-named) node a unique name: both ORT tools select nodes by name."""
    seen: set[str] = set()
    for i, n in enumerate(graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_quantize_{i}"
        seen.add(n.name)


def paths_between(index: Index, sources, sink_ops) -> set[str]:
    """Names of the nodes on a path from a tensor in ``sources`` to a node of type ``sink_ops`` (sinks included).

    The forward walk stops at the sinks, so what lies beyond one softmax is never on the path to the next.
    """
    ahead: set[str] = set()
    queue = deque(n for s in sources for n in index.consumers.get(s, ()))
    while queue:
        n = queue.popleft()
        if n.name in ahead:
            continue
        ahead.add(n.name)
        if n.op_type in sink_ops:
            continue
        for o in n.output:
            queue.extend(index.consumers.get(o, ()))
    on_path: set[str] = set()
    queue = deque(index.nodes[s] for s in ahead if index.nodes[s].op_type in sink_ops)
    while queue:
        n = queue.popleft()
        if n.name in on_path or n.name not in ahead:
            continue
        on_path.add(n.name)
        queue.extend(index.producer[i] for i in n.input if i in index.producer)
    return on_path


def steering_path(index: Index) -> set[str]:
    """The image-key scaling (Where + Mul on the logits), the additive mask, and the softmaxes they feed."""
    return paths_between(index, (*STEERING_INPUTS, MASK_INPUT), {"Softmax"})


def rotary_path(index: Index) -> set[str]:
    return paths_between(index, (POSITION_INPUT,), {"Cos", "Sin"})


def attention_readout(index: Index) -> set[str]:
    """Nodes between a Softmax and a graph output other than ``logits`` without crossing a MatMul.

    The decoder's attention outputs (the last query row's softmax, mean over heads, and its
    share on image keys) are float32 in every export; the present K/V are not reached this way.
    """
    softmax = [n for n in index.graph.node if n.op_type == "Softmax"]
    ahead: set[str] = set()
    queue = deque(c for n in softmax for o in n.output for c in index.consumers.get(o, ()))
    while queue:
        n = queue.popleft()
        if n.name in ahead or n.op_type in ("MatMul", "Gemm", "MatMulNBits", "Softmax"):
            continue
        ahead.add(n.name)
        for o in n.output:
            queue.extend(index.consumers.get(o, ()))
    behind: set[str] = set()
    queue = deque(index.producer[o] for o in index.outputs if o != LOGITS_OUTPUT and o in index.producer)
    while queue:
        n = queue.popleft()
        if n.name in behind or n.op_type == "Softmax":
            continue
        behind.add(n.name)
        queue.extend(index.producer[i] for i in n.input if i in index.producer)
    return ahead & behind


def rmsnorm_nodes(index: Index) -> set[str]:
    """Every decomposed RMSNorm: x -> Pow(x, 2) -> ReduceMean -> (Add, Sqrt, Div | Reciprocal)* -> Mul(x, .)."""
    found: set[str] = set()
    for rm in (n for n in index.graph.node if n.op_type == "ReduceMean"):
        pow_node = index.producer.get(rm.input[0])
        if pow_node is None or pow_node.op_type != "Pow":
            continue
        x = pow_node.input[0]
        chain, node = [pow_node, rm], rm
        for _ in range(6):
            nxt = index.consumers.get(node.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type not in ("Add", "Sqrt", "Div", "Reciprocal", "Mul"):
                break
            node = nxt[0]
            chain.append(node)
            if node.op_type == "Mul" and x in node.input:
                break
        if not (node.op_type == "Mul" and x in node.input):
            continue
        before = index.producer.get(x)
        if before is not None and before.op_type == "Cast":
            chain.append(before)
        for _ in range(3):   # the downcast (a no-op in fp32) and the weight
            nxt = index.consumers.get(node.output[0], [])
            if len(nxt) != 1:
                break
            node = nxt[0]
            if node.op_type == "Cast" or (node.op_type == "Mul" and any(index.is_constant(i) for i in node.input)):
                chain.append(node)
                if node.op_type == "Mul":
                    break
            else:
                break
        found.update(n.name for n in chain)
    return found


def lm_head(index: Index, output: str = LOGITS_OUTPUT) -> str | None:
    """The MatMul with a constant weight nearest to ``output`` walking back, or None (not a decoder)."""
    if output not in index.outputs:
        return None
    seen: set[str] = set()
    queue = deque([output])
    while queue:
        n = index.producer.get(queue.popleft())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and index.is_constant(n.input[1]):
            return n.name
        queue.extend(n.input)
    return None


def weight_matmuls(index: Index) -> list[str]:
    """MatMul nodes whose second input is a constant weight: what MatMulNBits can replace."""
    return [n.name for n in index.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and index.is_constant(n.input[1])]


def feeders(index: Index, kept: set[str]) -> set[str]:
    """Constant / Identity-of-an-initializer nodes whose every consumer is in ``kept``."""
    out: set[str] = set()
    for n in index.graph.node:
        if n.op_type == "Constant" or (n.op_type == "Identity" and n.input[0] in index.initializers):
            users = [c for o in n.output for c in index.consumers.get(o, [])]
            if users and all(c.name in kept for c in users) and not set(n.output) & index.outputs:
                out.add(n.name)
    return out


def kept_fp32(index: Index, keep_lm_head: bool = True) -> set[str]:
    """Node names the fp16 conversion must leave in fp32 (see the module doc)."""
    kept = steering_path(index) | attention_readout(index) | rotary_path(index) | rmsnorm_nodes(index)
    kept |= {n.name for n in index.graph.node if n.op_type in FP32_OPS}
    head = lm_head(index)
    if keep_lm_head and head is not None:
        kept.add(head)
    return kept | feeders(index, kept)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows its inputs' producers (the fp16 tool appends its Casts)."""
    index = Index(graph)
    ready = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending = {n.name: sum(1 for i in n.input if i not in ready and i in index.producer) for n in graph.node}
    order: list[onnx.NodeProto] = []
    queue = deque(n for n in graph.node if pending[n.name] == 0)
    while queue:
        n = queue.popleft()
        order.append(n)
        for o in n.output:
            for c in {c.name: c for c in index.consumers.get(o, ())}.values():
                pending[c.name] -= sum(1 for i in c.input if i == o)
                if pending[c.name] == 0:
                    queue.append(c)
    if len(order) != len(graph.node):
        stuck = sorted(set(index.nodes) - {n.name for n in order})[:5]
        raise ValueError(f"the graph has a cycle or a dangling input around {', '.join(stuck)}")
    graph.ClearField("node")
    graph.node.extend(order)
