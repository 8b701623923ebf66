"""The runtime never imports torch/transformers/optimum (nor TensorRT or CUDA bindings unless TensorRT is
asked for), and is safe to share between threads."""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import runtime
from tests.conftest import random_image

ROOT = Path(__file__).resolve().parents[2]

_BLOCKED_RUN = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum', 'tensorrt', 'cuda', 'pycuda'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, runtime
vlm = runtime.load(sys.argv[1])
a = vlm.answer(np.full((20, 30, 3), 120, np.uint8), 'Where is the mug?', max_new_tokens=3)
assert len(a.token_ids) > 0 and a.confidence is not None
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum', 'tensorrt', 'cuda', 'pycuda'))
assert not bad, bad
print('ok', a.steering, a.alpha)
"""


def test_runtime_runs_with_torch_transformers_and_optimum_blocked(bundle_dir):
    out = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, str(bundle_dir("tiny"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok adaptvis")


_ENGINES_IMPORTS = """
import subprocess, sys
import numpy as np, runtime, runtime.engine_target as probe
def looked(*args):
    raise AssertionError('a CPU load looked for TensorRT')
probe.tensorrt_version = probe.cuda_device = looked
vlm = runtime.load(sys.argv[1], providers=['cpu'])
vlm.answer(np.full((20, 30, 3), 120, np.uint8), 'Where is the mug?', max_new_tokens=2)
import engines, engines.profiles, engines.builder, engines.progress, engines.__main__
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'pycuda', 'torch', 'onnx'))
assert not heavy, heavy
print('ok')
"""


def test_engines_package_and_cpu_runtime_import_no_tensorrt_or_cuda(bundle_dir):
    """TensorRT, CUDA bindings and onnx are imported by the engine builder's work, never on import;
    a CPU runtime never even looks for TensorRT."""
    out = subprocess.run([sys.executable, "-c", _ENGINES_IMPORTS, str(bundle_dir("tiny"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_threads_give_the_same_answers_as_serial_use(bundle_dir):
    vlm = runtime.load(bundle_dir("tiny"))
    jobs = [(random_image(i % 3), q, s) for i in range(12)
            for q, s in [("Where is the mug in relation to the plate?", runtime.AdaptVis(0.5, 2.0, 0.2)),
                         ("What is left of the cup?", runtime.ScalingVis(0.5))]]
    serial = [vlm.answer(img, q, steering=s, max_new_tokens=6) for img, q, s in jobs]
    fresh = runtime.load(bundle_dir("tiny"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda job: fresh.answer(job[0], job[1], steering=job[2], max_new_tokens=6), jobs))
    assert [a.token_ids for a in threaded] == [a.token_ids for a in serial]
    assert [a.alpha for a in threaded] == [a.alpha for a in serial]


def test_module_level_answer_loads_once(bundle_dir):
    a = runtime.answer(random_image(0), "Where is the mug?", bundle=bundle_dir("tiny"), max_new_tokens=3)
    b = runtime.answer(random_image(0), "Where is the mug?", bundle=bundle_dir("tiny"), max_new_tokens=3)
    assert a.token_ids == b.token_ids
    assert len([k for k in runtime._loaded if k[0] == str(bundle_dir("tiny").resolve())]) == 1


def test_cli_answers_and_reports_bad_input(bundle_dir, tmp_path):
    from PIL import Image
    image = tmp_path / "scene.png"
    Image.fromarray(random_image(0)).save(image)
    ok = subprocess.run([sys.executable, "-m", "runtime", "answer", "--bundle", str(bundle_dir("tiny")),
                         "--image", str(image), "Where is the mug?", "--json", "--max-new-tokens", "4"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    import json
    data = json.loads(ok.stdout)
    assert data["steering"] == "adaptvis" and len(data["token_ids"]) == 4 and data["timings_ms"]["total"] > 0 and data["decoder"]
    bad = subprocess.run([sys.executable, "-m", "runtime", "answer", "--bundle", str(bundle_dir("tiny")),
                          "--image", str(tmp_path / "missing.png"), "Where?"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "ImageError" in bad.stderr and "Traceback" not in bad.stderr
