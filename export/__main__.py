"""python -m export <alias|hub-id|folder> (LLaVA-1.5, Qwen2.5-VL or Qwen3-VL: by its config's model_type) [--out DIR] [--dtype fp32|fp16] [--opset N] [--force] [--exporter-writes-weights]
[--parity-layers N] [--parity-cases all|per-layer-head] [--memory-log FILE] [--no-memory-check]

Aliases: llava (llava-hf/llava-1.5-7b-hf), qwen2.5-vl (Qwen/Qwen2.5-VL-3B-Instruct), qwen3-vl
(Qwen/Qwen3-VL-2B-Instruct), fetched from the Hugging Face Hub or its local cache.  A Qwen checkpoint takes
--out, --opset, --atol, --attention-form, --no-fused, --revision, --force and --dtype fp32; the LLaVA-only
options (--pad-to-square, --exporter-writes-weights, --parity-layers, --parity-cases, --memory-log,
--no-memory-check, --dtype fp16) are refused for it: exit status 2, nothing written."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphs.manifest import ATTENTION_FORMS, DEFAULT_ATTENTION_FORM

from .settings import DEFAULT_OPSET
from .errors import BundleExistsError, ExportError
from .source import ALIASES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("model", help=f"hub id, local checkpoint folder, or an alias ({', '.join(ALIASES)})")
    parser.add_argument("--out", type=Path, help="bundle folder (default: bundles/<model name>)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"],
                        help="the bundle's float type (default: the checkpoint's own, its config's torch_dtype: "
                             "fp16 for llava-hf/llava-1.5-7b-hf; fp32 where it is neither)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, <= 20 for TensorRT 10.3")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--pad-to-square", action="store_true",
                        help="pad images to a square with the mean colour before CLIP preprocessing (original LLaVA)")
    parser.add_argument("--atol", type=float,
                        help="no parity tolerance below this (default: the model's own rounding: fp32, 8x PyTorch "
                             "fp32's distance from a float64 run; fp16, 4x PyTorch fp16's distance from the fp32 "
                             "reference); it widens, never narrows one")
    parser.add_argument("--attention-form", choices=ATTENTION_FORMS, default=DEFAULT_ATTENTION_FORM,
                        help="where the decoder applies the image-attention scale: on the logits, or on the "
                             "image keys (a form fused attention kernels can take); the same attention "
                             f"(default {DEFAULT_ATTENTION_FORM})")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--exporter-writes-weights", action="store_true",
                        help="let the TorchScript exporter fold and write the weights itself (holds a second copy of "
                             "each graph's weights: ~2-3x more peak memory); default: trace without weights, then "
                             "write them one tensor at a time")
    parser.add_argument("--parity-layers", type=int, metavar="N",
                        help="decoder layers per ONNX Runtime session in the parity check (default: fp32, the whole decoder "
                             "in one session; fp16, as many layers as keep a range's weights, in fp32, within a quarter of "
                             "the model's size: ONNX Runtime casts an fp16 decoder to fp32 on an x86 CPU); 0: the whole "
                             "decoder in one session")
    parser.add_argument("--no-fused", action="store_true",
                        help="write only the standard decoder (default: also the fused plain + steered pair for "
                             "ONNX Runtime's CPU and CUDA providers, checked against it)")
    parser.add_argument("--parity-cases", choices=["all", "per-layer-head"],
                        help="the decoder's parity cases: all (alpha 0.5, 1, 2 and a per-layer-head scale) or the "
                             "per-layer-head one (default: all up to 3 B parameters, the per-layer-head one above: "
                             "each case is a whole prefill of the model)")
    parser.add_argument("--no-memory-check", action="store_true",
                        help="start even where the expected peak memory exceeds MemAvailable (by default the "
                             "export says what it needs first, and refuses at once where it is not available)")
    parser.add_argument("--memory-log", type=Path, metavar="FILE",
                        help="write each export phase's peak resident memory (load, trace/weights/reference per "
                             "graph, parity per graph, manifest) to FILE as JSON, and log it; resets the process's "
                             "VmHWM at each phase (Linux)")
    args = parser.parse_args(argv)
    out = args.out or Path("bundles") / Path(ALIASES.get(args.model, args.model)).name
    from .route import export_model   # heavy imports only after the arguments parse
    try:
        export_model(args.model, out, dtype=args.dtype, opset=args.opset, force=args.force,
                     revision=args.revision, pad_to_square=args.pad_to_square, atol=args.atol,
                     attention_form=args.attention_form, memory_log=args.memory_log,
                     parity_layers=args.parity_layers, parity_cases=args.parity_cases, fused=not args.no_fused,
                     check_memory=not args.no_memory_check,
                     bound_weights=not args.exporter_writes_weights)
    except (ExportError, BundleExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
