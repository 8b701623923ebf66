"""Quantize an exported bundle into a new bundle: fp16, or int8 / int4 weight-only (MatMulNBits).

    from quantize import quantize_bundle
    quantize_bundle("bundles/mine", "bundles/mine-int4", to="int4", block_size=32, report=True)

    python -m quantize bundles/mine --to int4 [--block-size 32] [--vision] [--out DIR] [--report]

The source is only read; the result is written atomically; ``runtime.load()`` runs it as it is.  A Qwen2.5-VL /
Qwen3-VL bundle (int8 / int4 / int8-dynamic) goes through ``quantize/qwen_bundle.py`` and is answered by
``runtime.qwen_vl``'s loops.
The image-key scaling, the mask, softmax, RMSNorm and the rotary angles keep computing in fp32.
"""
from runtime.errors import BundleExistsError

from .bundle import quantize_bundle
from .settings import Settings
from .errors import AlreadyQuantizedError, OptionError, QuantizeError, SourceBundleError

__all__ = ["quantize_bundle", "Settings", "QuantizeError", "OptionError", "SourceBundleError",
           "AlreadyQuantizedError", "BundleExistsError"]
