"""calibration.calibrate: the grid search through the runner, calibration.json into the runtime, resume."""
from __future__ import annotations

import io
import itertools
import json
import shutil

import pytest

from calibration import calibrate as cal
from calibration.grid import choose_alpha, default_thresholds
from evaluation.cache import ResultCache
from evaluation.runner import Runner
from evaluation.scoring import score_item
from readers.datasets import load_dataset
from readers.workset import load_worksets
import runtime
import runtime.model
from runtime.bundle import Bundle
from scenes.synthetic import generate

from tests.evaluation.fakes import HIGH_ALPHA, LOW_ALPHA, SPLIT, FakeVLM, confidence_of

TOKENS = "3"


@pytest.fixture
def bundle(tmp_path, bundle_dir):
    """A private copy of the tiny bundle (calibrate writes into it)."""
    return shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")


@pytest.fixture(scope="module")
def syn12(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn12"), n=12, seed=2, size=64)


@pytest.fixture
def count_calls(monkeypatch):
    """Counts VLM.answer calls of the real runtime."""
    calls = []
    real = runtime.model.VLM.answer

    def counted(self, *a, **k):
        calls.append(k.get("steering"))
        return real(self, *a, **k)
    monkeypatch.setattr(runtime.model.VLM, "answer", counted)
    return calls


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cal.main([str(a) for a in argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_grid_search_through_runner_picks_best_cell_of_cached_results(tmp_path):
    ds = generate(tmp_path / "syn", n=40, seed=5, size=64)
    (ws,) = load_worksets([ds], err=io.StringIO())
    vlm = FakeVLM(tmp_path / "fake")
    cache_path = tmp_path / "cache.jsonl"
    with ResultCache(cache_path) as cache:
        outcome = cal.calibrate_items(Runner(vlm, cache, 2, progress=False), ws, cal.Settings())
    dev, test = outcome.dev_ids, outcome.test_ids
    assert len(dev) == 8 and len(test) == 32
    assert not {it.group for it in ws.items if it.id in dev} & {it.group for it in ws.items if it.id in test}

    # Brute force over the grid, from the cache file alone.
    items = {it.id: it for it in ws.items}
    recs = {(r["item"], r["pass"]): r for r in ResultCache(cache_path).records()}
    conf = {i: recs[(i, "none")]["confidence"] for i in dev}
    right = {(i, a): score_item(items[i], recs[(i, f"alpha={a}")]["text"]) for i in dev for a in (0.5, 0.8, 1.2, 1.5, 2.0)}
    best = max(sum(right[(i, choose_alpha(conf[i], lo, hi, t))] for i in dev)
               for lo, hi, t in itertools.product((0.5, 0.8), (1.2, 1.5, 2.0), default_thresholds(conf.values())))
    b = outcome.best
    assert b.n_correct == best == len(dev)
    assert (b.alpha_low, b.alpha_high) == (LOW_ALPHA, HIGH_ALPHA)
    lows = [c for c in conf.values() if c < SPLIT]
    assert max(lows, default=0) < b.threshold <= min(c for c in conf.values() if c >= SPLIT)
    # The fake is right only with the alpha its confidence wants: a test item is right iff the
    # dev-chosen threshold routes it to the side of SPLIT it is on.
    doc = outcome.document
    test_conf = [confidence_of(items[i].image_path.name) for i in test]
    routed_right = sum((c < b.threshold) == (c < SPLIT) for c in test_conf)
    assert outcome.test_cell.n_correct == routed_right >= len(test) - 4
    assert doc["accuracy"]["test"]["adaptvis"] == pytest.approx(100.0 * routed_right / len(test))
    assert doc["accuracy"]["test"]["baseline"] == 0.0 and doc["accuracy"]["dev"]["adaptvis"] == 100.0
    assert doc["metrics"]["test"]["adaptvis"]["accuracy"] == doc["accuracy"]["test"]["adaptvis"]
    assert doc["metrics"]["dev"]["adaptvis"]["set_accuracy"] == 100.0
    assert doc["metrics"]["test"]["adaptvis"]["n_alpha_low"] == sum(c < b.threshold for c in test_conf)
    # Cost: dev items 1 + 5 passes, test items only none, alpha_low, alpha_high (ScalingVis's best is one of them).
    assert doc["metrics"]["test"]["scalingvis"]["alpha"] in (LOW_ALPHA, HIGH_ALPHA)
    assert len(vlm.calls) == 6 * len(dev) + 3 * len(test)


def test_rescaled_pass_is_adaptvis_second_pass(bundle_dir, syn12):
    """The cost rule rests on this: ScalingVis(alpha) answers exactly what AdaptVis answers
    when it picks alpha, and the unsteered pass gives AdaptVis's confidence."""
    vlm = runtime.load(bundle_dir("tiny"))
    for it in load_dataset(syn12).items[:2]:
        for steering in (runtime.AdaptVis(0.5, 1.5, 0.0), runtime.AdaptVis(0.5, 1.5, 1.0)):
            ad = vlm.answer(it.image_path, it.question, steering=steering, max_new_tokens=3)
            sv = vlm.answer(it.image_path, it.question, steering=runtime.ScalingVis(ad.alpha), max_new_tokens=3)
            plain = vlm.answer(it.image_path, it.question, steering=None, max_new_tokens=3)
            assert ad.token_ids == sv.token_ids and ad.text == sv.text
            assert ad.confidence == pytest.approx(plain.confidence, abs=1e-6)


def test_calibration_json_round_trips_into_the_runtime(tmp_path, bundle, syn12):
    out = tmp_path / "run"
    rc, stdout, err = _run(bundle, syn12, "--max-new-tokens", TOKENS, "--out", out, "--quiet")
    assert rc == 0, err
    doc = json.loads((bundle / "calibration.json").read_text())
    a = doc["adaptvis"]
    assert doc["schema_version"] == 1
    assert set(a) == {"alpha_low", "alpha_high", "threshold", "round_confidence", "apply_to"}
    assert a["alpha_low"] in (0.5, 0.8) and a["alpha_high"] in (1.2, 1.5, 2.0) and 0 <= a["threshold"] <= 1
    assert (a["round_confidence"], a["apply_to"]) == (False, "last_token")
    assert doc["split"]["n_dev"] + doc["split"]["n_test"] == doc["dataset"]["n_used"] == 12
    assert doc["split"]["n_dev"] == 4            # int(0.2 * 12) = 2, rounded up to one whole group
    assert doc["dataset"]["subset"] == "Controlled_Synthetic" and doc["created"]
    assert {"adaptvis", "baseline", "scalingvis"} <= set(doc["accuracy"]["test"])
    assert json.loads((out / "calibration.json").read_text()) == doc
    assert (out / "calibration.md").read_text().startswith("# AdaptVis calibration")
    assert (out / "calibration_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]        # no temp file left behind
    assert "alpha_low=" in stdout

    def check(cal_doc):
        a = cal_doc["adaptvis"]
        vlm = runtime.load(bundle)
        s = vlm.default_steering
        assert (s.low, s.high, s.threshold) == (a["alpha_low"], a["alpha_high"], a["threshold"])
        it = load_dataset(syn12).items[0]
        for ans in (vlm.answer(it.image_path, it.question, max_new_tokens=2),
                    runtime.answer(it.image_path, it.question, bundle=bundle, max_new_tokens=2)):
            assert ans.steering == "adaptvis"
            want = a["alpha_low"] if ans.confidence < a["threshold"] else a["alpha_high"]
            assert ans.alpha == want
        return ans

    check(doc)
    # The other branch of the rule: threshold 0 sends everything to alpha_high.  Same folder:
    # every pass this needs is already in the cache.
    rc, _, err = _run(bundle, syn12, "--max-new-tokens", TOKENS, "--out", out, "--quiet",
                      "--thresholds", "0", "--grid-high", "2.0")
    assert rc == 0, err
    doc2 = json.loads((bundle / "calibration.json").read_text())
    assert doc2["adaptvis"]["threshold"] == 0.0 and doc2["adaptvis"]["alpha_high"] == 2.0
    runtime._loaded.clear()
    assert check(doc2).alpha == 2.0


def test_resume_makes_no_model_calls(tmp_path, bundle, syn12, count_calls):
    out = tmp_path / "run"
    args = (bundle, syn12, "--max-new-tokens", TOKENS, "--out", out, "--quiet", "--no-write")
    rc, first, err = _run(*args)
    assert rc == 0, err
    n = len(count_calls)
    lines = (out / "cache.jsonl").read_text().splitlines()
    assert n == len(lines) > 0
    assert not (bundle / "calibration.json").exists()                          # --no-write
    doc = json.loads((out / "calibration.json").read_text())

    rc, second, err = _run(*args)
    assert rc == 0 and len(count_calls) == n                                     # all from the cache
    assert json.loads((out / "calibration.json").read_text())["adaptvis"] == doc["adaptvis"]
    assert f"model calls 0, cached {n}" in second

    # Interrupted: the cache lost its tail, the last line torn mid-write.
    keep = n // 2
    (out / "cache.jsonl").write_text("\n".join(lines[:keep]) + "\n" + lines[keep][:25])
    rc, third, err = _run(*args)
    assert rc == 0 and len(count_calls) == n + (n - keep)
    assert json.loads((out / "calibration.json").read_text())["adaptvis"] == doc["adaptvis"]


def test_missing_image_is_reported_and_the_rest_goes_on(tmp_path, bundle):
    ds = generate(tmp_path / "syn", n=12, seed=6, size=64)
    recs = json.loads(ds.read_text())
    (ds.parent / recs[5]["image_path"]).unlink()
    rc, _, err = _run(bundle, ds, "--max-new-tokens", "2", "--out", tmp_path / "run", "--quiet")
    assert rc == 0, err
    assert f"{ds}:" in err and "image not found" in err and recs[5]["image_path"] in err
    doc = json.loads((bundle / "calibration.json").read_text())
    assert doc["dataset"]["n_used"] == 11 and doc["dataset"]["problems"] == 1
    assert "image not found" in (tmp_path / "run" / "calibration.md").read_text()


def test_cli_errors(tmp_path, bundle, syn12):
    rc, _, err = _run(bundle, tmp_path / "nowhere", "--quiet")
    assert rc == 2 and "not found" in err
    rc, _, err = _run(tmp_path / "no-bundle", syn12, "--quiet")
    assert rc == 2 and "BundleError" in err
    rc, _, err = _run(bundle, syn12, "--quiet", "--limit", "4", "--out", tmp_path / "r")   # one group: no test split
    assert rc == 2 and "dev=" in err
    with pytest.raises(SystemExit):
        _run(bundle, syn12, "--dev-fraction", "1.5")
    with pytest.raises(SystemExit):
        _run(bundle, syn12, "--grid-low", "0.5,x")
    assert not (bundle / "calibration.json").exists()


@pytest.mark.parametrize("flag, value", [("--grid-high", "1.5,1e38"), ("--grid-low", "0.001,0.5")])
def test_grid_alphas_out_of_range_are_refused_before_any_work(tmp_path, syn12, flag, value, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path / "no-bundle", syn12, flag, value)
    assert "must lie in [0.01, 100]" in capsys.readouterr().err


def test_calibrate_without_matplotlib(tmp_path, monkeypatch):
    """No matplotlib: the calibration is done and written, one line names the extra, no traceback."""
    import sys

    ds = generate(tmp_path / "syn", n=40, seed=5, size=64)
    vlm = FakeVLM(tmp_path / "fake")
    monkeypatch.setattr(runtime, "load", lambda *a, **k: vlm)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "out"
    # --no-write: the fake is no bundle to sign (writing into a real one: test_calibration_json_round_trips...)
    rc, stdout, err = _run(tmp_path / "fake", ds, "--out", out, "--quiet", "--max-new-tokens", "2", "--no-write")
    assert rc == 0, err
    assert err.splitlines() == ["plots skipped: pip install 'adaptvis-edge[calibration]' for matplotlib"]
    doc = json.loads((out / "calibration.json").read_text())
    assert (doc["adaptvis"]["alpha_low"], doc["adaptvis"]["alpha_high"]) == (LOW_ALPHA, HIGH_ALPHA)
    assert not (out / "calibration_heatmap.png").exists()
    md = (out / "calibration.md").read_text()
    assert "calibration_heatmap.png" not in md and "matplotlib is not installed" in md
    assert "AdaptVis for Controlled_Synthetic" in stdout


def test_a_qwen_bundle_is_calibrated_signed_and_steered_by_it(tmp_path, qwen_bundle_dir, syn12):
    bundle = shutil.copytree(qwen_bundle_dir("tiny-qwen2.5-vl"), tmp_path / "qwen")
    rc, _, err = _run(bundle, syn12, "--max-new-tokens", TOKENS, "--out", tmp_path / "run", "--quiet",
                      "--thresholds", "0", "--grid-high", "2.0")
    assert rc == 0, err
    opened = Bundle.open(bundle)                   # digests checked: calibration.json is signed
    assert opened.calibration is not None and "calibration.json" in opened.manifest.sha256
    vlm = runtime.load(bundle)
    assert (vlm.default_steering.threshold, vlm.default_steering.high) == (0.0, 2.0)
    it = load_dataset(syn12).items[0]
    assert vlm.answer(it.image_path, it.question, max_new_tokens=2).alpha == 2.0
