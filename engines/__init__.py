"""TensorRT engines for a bundle, built ahead of time on the machine that runs them (`just engines`).

Pure-Python modules (``layout``, ``profiles``, ``target``) are what the runtime imports, and only
when TensorRT is asked for; ``build``, ``progress`` and ``context_model`` import TensorRT / onnx and
are used by the builder (``python -m engines``) alone.  Nothing here imports torch.

    <bundle>/engines/trt-<TensorRT version>-sm<compute capability>/
        engines.json              what was built, for which TensorRT and GPU, profiles, build time, sizes
        vision.engine  embed.engine  decoder.engine          serialized TensorRT engines (plans)
        vision_ctx.onnx embed_ctx.onnx decoder_ctx.onnx      one-node ONNX Runtime EPContext models pointing at them
        timing.cache              TensorRT's timing cache: a rebuild with other limits takes seconds
"""
