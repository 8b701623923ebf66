"""TensorRT engines for a bundle, built ahead of time on the machine that runs them (`just engines`).

Where engines live and which build a machine may load is the runtime's (``runtime/engine_layout.py``,
``runtime/engine_target.py``): a robot loads engines without this package.  ``build``, ``progress`` and
``context_model`` import TensorRT / onnx when building (``python -m engines``).  Nothing here imports torch.

    <bundle>/engines/trt-<TensorRT version>-sm<compute capability>/
        engines.json              what was built, for which TensorRT and GPU, profiles, build time, sizes
        vision.engine  embed.engine  decoder.engine          serialized TensorRT engines (plans)
        vision_ctx.onnx embed_ctx.onnx decoder_ctx.onnx      one-node ONNX Runtime EPContext models pointing at them
        timing.cache              TensorRT's timing cache: a rebuild with other limits takes seconds
"""
