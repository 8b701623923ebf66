"""Imports sit at the top of their file; one inside a function (or class) defers a heavy or optional
dependency, and is listed here with its reason.  The packages are those of ``[tool.importlinter]``."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_TORCH = "heavy, optional: torch / transformers (the export extra)"
_ONNX = "optional: onnx (the export extra); the runtime reads graphs with onnxruntime alone"
_MATPLOTLIB = "heavy, optional: matplotlib (the calibration extra), imported when a plot is drawn"
_RICH = "optional: rich (the calibration extra); without it, no progress bar"
_TQDM = "optional: tqdm comes with transformers (the export extra), not with the runtime"

_TRT = "optional: TensorRT's Python package, present only where engines are built"
_HUB = "optional: the hub client (with transformers), reached only for a hub id"
_EXPORTER = _TORCH + ": the exporter's modules import torch at their top"
_ORT_TOOLS = "optional: onnxruntime's quantization tools import onnx (the export extra)"

#: (file, module) -> why the import waits for its function.
DEFERRED = {
    ("engines/builder.py", "tensorrt"): _TRT,
    ("export/qwen_reference.py", "transformers"): _TORCH,
    ("export/qwen_vl/bundle.py", "export.qwen_reference"): _EXPORTER,
    ("export/qwen_vl/bundle.py", "export.qwen_vl.decoder"): _EXPORTER,
    ("export/qwen_vl/bundle.py", "export.qwen_vl.onnx_export"): _EXPORTER,
    ("export/qwen_vl/bundle.py", "export.qwen_vl.parity"): _EXPORTER,
    ("export/qwen_vl/bundle.py", "export.qwen_vl.vision"): _EXPORTER,
    ("export/qwen_vl/bundle.py", "onnx"): _ONNX,
    ("export/qwen_vl/bundle.py", "torch"): _TORCH,
    ("export/qwen_vl/bundle.py", "transformers"): _TORCH,
    ("fixtures/qwen_checkpoints.py", "torch"): _TORCH,
    ("fixtures/qwen_checkpoints.py", "transformers"): _TORCH,
    ("engines/context_model.py", "onnx"): _ONNX,
    ("engines/progress.py", "rich.progress"): _RICH,
    ("export/__main__.py", "export.route"): _TORCH + "; the arguments are checked before it loads",
    ("export/bound_weights.py", "onnx.reference"): _ONNX,
    ("export/bound_weights.py", "torch"): _TORCH,
    ("export/bundle.py", "export.bound_weights"): _EXPORTER,
    ("export/bundle.py", "export.external_data"): _EXPORTER,
    ("export/bundle.py", "export.onnx_configs"): _EXPORTER,
    ("export/bundle.py", "export.parity"): _EXPORTER,
    ("export/bundle.py", "export.wrappers"): _EXPORTER,
    ("export/bundle.py", "onnx"): _ONNX,
    ("export/bundle.py", "optimum.exporters.onnx"): _TORCH,
    ("export/bundle.py", "torch"): _TORCH,
    ("export/bundle.py", "transformers"): _TORCH,
    ("export/external_data.py", "onnx.external_data_helper"): _ONNX,
    ("export/external_data.py", "optimum.exporters.onnx"): _TORCH,
    ("export/parity.py", "export.range_parity"): _ONNX + " (range_parity imports it at its top)",
    ("export/release.py", "torch"): _TORCH,
    ("export/shape_inference.py", "torch"): _TORCH,
    ("export/source.py", "huggingface_hub"): _HUB,
    ("export/source.py", "huggingface_hub.errors"): _HUB,
    ("fused/weights.py", "torch"): _TORCH,
    ("fused/weights.py", "transformers"): _TORCH,
    ("fused/weights.py", "transformers.modeling_rope_utils"): _TORCH,
    ("quantize/weights.py", "onnxruntime.quantization"): _ORT_TOOLS,
    ("quantize/weights.py", "onnxruntime.quantization.matmul_nbits_quantizer"): _ORT_TOOLS,
    ("quantize/weights.py", "onnxruntime.transformers.float16"): _ORT_TOOLS,
    ("runtime/engine_target.py", "tensorrt"): _TRT,
    ("bench/__main__.py", "bench.reference"): _TORCH,
    ("bench/__main__.py", "onnx"): _ONNX,
    ("bench/artifacts.py", "export"): _ONNX + "; a built bundle needs no exporter",
    ("bench/loadtest.py", "export"): _ONNX + "; a built bundle needs no exporter",
    ("bench/memory.py", "runtime"): "measured: the baseline RSS is read before the runtime is imported",
    ("bench/ours.py", "runtime"): "bench.memory imports this module before it reads its baseline RSS",
    ("bench/roofline.py", "onnx"): _ONNX,
    ("bench/variants.py", "fused"): _ONNX,
    ("export/qwen_vl/bundle.py", "export.qwen_vl.fused"): _TORCH + "; only an export with the fused pair checks it",
    ("bench/variants.py", "onnx"): _ONNX,
    ("bench/variants.py", "quantize"): _ONNX,
    ("demo/scene_demo.py", "export"): _ONNX + "; a reused bundle needs no exporter",
    ("diagnostics/explain.py", "matplotlib"): _MATPLOTLIB,
    ("diagnostics/explain.py", "matplotlib.patches"): _MATPLOTLIB,
    ("evaluation/plots.py", "matplotlib"): _MATPLOTLIB,
    ("evaluation/plots.py", "matplotlib.pyplot"): _MATPLOTLIB,
    ("evaluation/reading.py", "tqdm"): _TQDM,
    ("evaluation/runner.py", "rich.console"): _RICH,
    ("evaluation/runner.py", "rich.progress"): _RICH,
    ("fixtures/checkpoints.py", "torch"): _TORCH,
    ("fixtures/checkpoints.py", "fixtures.half_weights"): _TORCH + " (the fp16 writer imports both)",
    ("fixtures/half_weights.py", "safetensors.torch"): _TORCH,
    ("fixtures/half_weights.py", "torch"): _TORCH,
    ("fixtures/half_weights.py", "transformers"): _TORCH,
    ("fixtures/checkpoints.py", "transformers"): _TORCH,
    ("scenes/synthetic.py", "rich.progress"): _RICH,
    ("serve/__init__.py", "serve.app"): "heavy, optional: FastAPI (the serve extra)",
    ("serve/__main__.py", "serve.app"): "heavy, optional: FastAPI (the serve extra)",
    ("serve/__main__.py", "serve.protocol"): "optional: it subclasses uvicorn's protocol (the serve extra)",
    ("serve/__main__.py", "uvicorn"): "optional: uvicorn (the serve extra)",
    ("serve/fleet.py", "ray"): "heavy, optional: Ray (the fleet extra)",
    ("spatial/architecture.py", "transformers"): _TORCH,
    ("spatial/assemble.py", "safetensors"): _TORCH,
    ("spatial/assemble.py", "spatial.lora"): _TORCH,
    ("spatial/assemble.py", "torch"): _TORCH,
    ("spatial/assemble.py", "transformers"): _TORCH,
    ("spatial/smollm2.py", "torch"): _TORCH,
    ("spatial/smollm2.py", "transformers"): _TORCH,
    ("spatial/train.py", "torch"): _TORCH,
    ("spatial/train.py", "tqdm"): _TQDM,
    ("spatial/train.py", "transformers"): _TORCH,
    ("spatial/train.py", "transformers.models.llava.modeling_llava"): _TORCH,
    ("spatial/train_settings.py", "torch"): _TORCH,
    ("spatial/run_files.py", "safetensors.torch"): _TORCH,
    ("spatial/train.py", "spatial.lora"): _TORCH,
    ("spatial/train_relation.py", "spatial.lora"): _TORCH,
    ("spatial/run_files.py", "spatial.lora"): _TORCH,
    ("spatial/train_relation.py", "torch"): _TORCH,
    ("spatial/train_relation.py", "tqdm"): _TQDM,
    ("spatial/train_relation.py", "transformers"): _TORCH,
    ("spatial/train_relation.py", "transformers.models.llava.modeling_llava"): _TORCH,
}

#: Function-level imports of the packages whose imports are not sorted yet: each is to move to the top
#: of its file, or into DEFERRED with its reason.
UNSORTED: set = set()


def packages() -> list[str]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return conf["tool"]["importlinter"]["root_packages"]


def _modules(path: Path, node: ast.AST) -> list[str]:
    """The modules an import statement names, relative ones resolved against ``path``'s package."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1]
    if node.level == 0:
        return [node.module]
    base = package[:len(package) - node.level + 1]
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, a.name]) for a in node.names]


def nested_imports(path: Path) -> set[tuple[str, str]]:
    """(file, module) of every import inside a function, lambda or class body of ``path``."""
    found: set[tuple[str, str]] = set()
    name = path.relative_to(ROOT).as_posix()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if nested and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.update((name, m) for m in _modules(path, child))
            visit(child, nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                                      ast.Lambda)))
    visit(ast.parse(path.read_text(), filename=name), False)
    return found


def all_nested_imports() -> set[tuple[str, str]]:
    return {pair for package in packages() for path in sorted((ROOT / package).rglob("*.py"))
            for pair in nested_imports(path)}


def test_every_import_inside_a_function_is_listed_with_its_reason():
    unlisted = sorted(all_nested_imports() - set(DEFERRED) - UNSORTED)
    assert not unlisted, ("imports inside functions that defer no heavy or optional dependency: move them to the "
                          "top of their file, or list them in DEFERRED with the reason:\n"
                          + "\n".join(f"  {f}: {m}" for f, m in unlisted))


def test_the_lists_name_only_imports_that_exist():
    stale = sorted((set(DEFERRED) | UNSORTED) - all_nested_imports())
    assert not stale, "listed, but no longer imported inside a function: " + ", ".join(f"{f}: {m}" for f, m in stale)


def test_the_scanner_finds_nested_imports_and_resolves_relative_ones(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("import json\n\ndef f():\n    import torch\n    from . import sibling\n"
                                    "    from .sub import thing\n\nclass C:\n    from os import path\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert nested_imports(package / "mod.py") == {("pkg/mod.py", "torch"), ("pkg/mod.py", "pkg.sibling"),
                                                  ("pkg/mod.py", "pkg.sub"), ("pkg/mod.py", "os")}


_HEAVY = ("torch", "transformers", "optimum", "onnx", "matplotlib", "fastapi", "uvicorn", "ray", "tqdm")
_IMPORT_ALL = f"""
import sys
import calibration.calibrate, diagnostics.explain, diagnostics.probe, evaluation.evaluate, evaluation.reading
import scenes.__main__, readers.workset, serve, serve.fleet, serve.__main__, spatial.train, spatial.assemble
import fixtures, demo.scene_demo, bench.memory, bench.ours
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({_HEAVY!r}))
assert not heavy, heavy
"""


def test_the_deferred_dependencies_are_not_imported_with_the_modules():
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
