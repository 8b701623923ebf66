"""Is each decoder layer's attention in a form that fused attention kernels can take?

TensorRT's and ONNX Runtime's fused attention match the plain chain

    Q K^T MatMul -> [Mul/Div by a constant scale] -> [Add mask] -> Softmax -> MatMul with V

(Casts and Identities in between allowed: an fp16 graph casts to float32 around the softmax).
It breaks when something data-dependent sits inside the chain (the ``scaled-logits`` form's
Mul by the per-key steering factor), or when the softmax probabilities are read by anything
but the value MatMul (a fused kernel never materialises them).  The ``scaled-keys`` form puts
the steering on K before the MatMul and recomputes the last query row's attention on its own
(a second, one-row softmax that feeds no MatMul: a read-out, not an attention core).

An attention core is a Softmax whose output (through Casts) reaches a MatMul.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from .graph_index import GraphIndex, node_label

_PASS = ("Cast", "Identity")
_LAYER = re.compile(r"(?:^|/)layers\.(\d+)/")


@dataclass(frozen=True)
class AttentionCore:
    layer: int | None
    softmax: str
    fusable: bool
    detail: str                 # the chain when fusable, else why not


def attention_cores(model: onnx.ModelProto) -> list[AttentionCore]:
    index = GraphIndex(model.graph)
    cores = []
    for sm in (n for n in model.graph.node if n.op_type == "Softmax"):
        value_matmuls, other_readers = _forward(index, sm.output[0])
        if not value_matmuls:
            continue                                     # a read-out softmax, not an attention core
        passed, before = _skip_back(index, sm.input[0])
        add = index.producer.get(before)
        qk, blocked, chain = None, [], []
        if add is not None and add.op_type == "Add":
            for operand in add.input:
                qk, blocked, ops = _back_to_matmul(index, operand)
                if qk is not None:
                    chain = ops + ["Add(mask)"] + passed
                    break
        else:
            qk, blocked, chain = _back_to_matmul(index, sm.input[0])
        reasons = [] if qk is not None else ["no Q K^T MatMul found before the softmax"]
        reasons += [f"{node_label(n)} multiplies the scores by a data-dependent tensor between the Q K^T MatMul "
                    f"and the softmax" for n in blocked]
        reasons += [f"the probabilities are also read by {node_label(n)}" for n in other_readers]
        m = _LAYER.search(sm.name)
        detail = "; ".join(reasons) or " -> ".join(["MatMul", *chain, "Softmax", "MatMul"])
        cores.append(AttentionCore(int(m.group(1)) if m else None, sm.name, not reasons, detail))
    return cores


def _forward(index: GraphIndex, probs: str):
    """(value MatMuls, other readers) of a softmax output, through Casts/Identities."""
    matmuls, others, frontier = [], [], [probs]
    while frontier:
        tensor = frontier.pop()
        for n in index.consumers.get(tensor, ()):
            if n.op_type in _PASS:
                frontier.extend(n.output)
            elif n.op_type == "MatMul" and n.input[0] == tensor:
                matmuls.append(n)
            else:
                others.append(n)
    return matmuls, others


def _skip_back(index: GraphIndex, tensor: str) -> tuple[list[str], str]:
    """(the Casts/Identities passed, in graph order; the tensor before them) walking back from ``tensor``."""
    passed = []
    n = index.producer.get(tensor)
    while n is not None and n.op_type in _PASS:
        passed.insert(0, n.op_type)
        tensor = n.input[0]
        n = index.producer.get(tensor)
    return passed, tensor


def _back_to_matmul(index: GraphIndex, tensor: str, depth: int = 0):
    """(the Q K^T MatMul, the data-dependent Mul/Div nodes passed, the ops from it to ``tensor`` in graph order)."""
    passed, tensor = _skip_back(index, tensor)
    n = index.producer.get(tensor)
    if n is None or depth > 8:
        return None, [], []
    if n.op_type == "MatMul":
        return n, [], passed
    if n.op_type in ("Mul", "Div"):
        operands = [(n.input[0], n.input[1])] + ([(n.input[1], n.input[0])] if n.op_type == "Mul" else [])
        for data, other in operands:
            qk, blocked, ops = _back_to_matmul(index, data, depth + 1)
            if qk is not None:
                constant = index.scalar_constant(other)
                step = f"{n.op_type}(constant)" if constant else f"{n.op_type}(data-dependent)"
                return qk, blocked + ([] if constant else [n]), ops + [step] + passed
    return None, [], []
