"""Build one TensorRT engine from one ONNX graph with the TensorRT Python API (10.x).

    network   builder.create_network(STRONGLY_TYPED)   the graph's own types decide each layer's precision
              (weakly typed + BuilderFlag.FP16 only for an fp16 engine from fp32 graphs: TensorRT 10 only)
    parser    OnnxParser.parse_from_file(path)          the file path, so decoder.onnx_data is found beside it
    config    WORKSPACE pool limit (if given); TF32 off (fp32 engines compute in fp32: parity 1e-3);
              the timing cache of earlier builds; the progress monitor; one optimisation profile per graph
    build     builder.build_serialized_network -> the plan, written to disk as it is (no copy)

Returns the serialized timing cache so the next graph (and the next rebuild) starts from it.
"""
from __future__ import annotations

from pathlib import Path

from runtime.engine_layout import EngineError


def build_engine(trt, graph_path: Path, out: Path, profiles: list[dict], *, strongly_typed: bool, fp16_flag: bool,
                 workspace_bytes: int | None, timing_cache: bytes, monitor=None) -> tuple[int, bytes]:
    """Write the engine for ``graph_path`` to ``out``; returns (engine bytes, serialized timing cache)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(f"node {error.node()}: {error.desc()}")
        raise EngineError(f"TensorRT {trt.__version__}'s ONNX parser rejected {graph_path}: {'; '.join(errors)} "
                          f"(`just check <bundle> --target ...` lists what the parser of a target release takes)")

    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.clear_flag(trt.BuilderFlag.TF32)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)          # ignore_mismatch=False: a cache from another GPU is not used
    if monitor is not None:
        config.progress_monitor = monitor

    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    for shapes in profiles:
        missing = [name for name in inputs if name not in shapes]
        if missing:
            raise EngineError(f"{graph_path} has inputs {', '.join(missing)} that the contract does not know "
                              f"(not exported by this version of the exporter?)")
        profile = builder.create_optimization_profile()
        for name in inputs:
            low, opt, high = shapes[name]
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        if monitor is not None and getattr(monitor, "cancelled", False):
            raise KeyboardInterrupt
        raise EngineError(f"TensorRT could not build an engine for {graph_path} (its log above says why; "
                          f"a larger --workspace or a smaller --max-prompt / --max-context may help)")
    view = memoryview(plan)
    with open(out, "wb") as f:
        f.write(view)
    return view.nbytes, memoryview(config.get_timing_cache().serialize()).tobytes()
