"""Every dynamic dimension of a graph's inputs is one the TensorRT profiles give a range.

The profiles (``graphs/tensorrt_profiles.py``) are built from the contracts: a dimension
named in ``DYNAMIC_DIMS`` gets (min, opt, max), any other is pinned to the manifest's value.
So, per input axis:

    graph dim symbolic  -> the contract names a dynamic dim there, and the profile ranges over it
    graph dim fixed     -> the profile pins exactly that value (min = opt = max = it)
    graph dim unnamed   -> a problem: no profile can name it
"""
from __future__ import annotations

import onnx

from .contracts import DYNAMIC_DIMS, GraphContract
from .manifest import Manifest
from .tensorrt_profiles import dim_ranges


def dynamic_dim_problems(model: onnx.ModelProto, contract: GraphContract, manifest: Manifest) -> list[str]:
    ranges = dim_ranges(manifest)
    specs = {s.name: s for s in contract.inputs}
    problems = []
    for i in model.graph.input:
        spec = specs.get(i.name)
        dims = list(i.type.tensor_type.shape.dim)
        label = f"input {i.name} (graph input)"
        if spec is None:
            problems.append(f"{label}: not in the contract, so no TensorRT profile names it")
            continue
        if len(dims) != len(spec.dims):
            problems.append(f"{label}: rank {len(dims)}, the profile has {len(spec.dims)} dims {spec.dims}")
            continue
        for axis, (d, name) in enumerate(zip(dims, spec.dims)):
            lo, _, hi = ranges[name]
            if d.HasField("dim_value"):
                if not lo == hi == d.dim_value:
                    problems.append(f"{label}: axis {axis} is fixed at {d.dim_value} but the profile gives "
                                    f"{name} {lo}..{hi}")
            elif not d.dim_param:
                problems.append(f"{label}: axis {axis} is dynamic without a name; no profile covers it")
            elif name not in DYNAMIC_DIMS:
                problems.append(f"{label}: axis {axis} is dynamic ({d.dim_param!r}) where the contract fixes "
                                f"{name!r}: the profile pins it to {lo}")
            elif d.dim_param != name:
                problems.append(f"{label}: axis {axis} is named {d.dim_param!r}, the profile ranges over {name!r}")
    return problems
