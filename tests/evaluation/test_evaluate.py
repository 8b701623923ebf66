"""evaluation.evaluate: three methods side by side, and the image's influence."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from evaluation import evaluate as ev
from evaluation.cache import ResultCache
from evaluation.runner import Runner
from readers.workset import load_worksets
import runtime
from runtime.bundle_write import write_calibration
from tests.manifest_edit import plant_file
from scenes.synthetic import generate

from .fakes import GOLD, HIGH_ALPHA, LOW_ALPHA, SPLIT, AttentionFakeVLM, FakeVLM, confidence_of

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def syn8(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn8"), n=8, seed=9, size=64)


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = ev.main([str(a) for a in argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_answer_category():
    opts = ("left", "right", "on", "under")
    assert ev.answer_category("On the left.", opts) == "on"
    assert ev.answer_category("It is to the LEFT, not right", opts) == "left"
    assert ev.answer_category("button underneath", opts) == "other"     # whole words only
    assert ev.answer_category("", opts) == "other"


def test_evaluate_end_to_end_on_the_tiny_bundle(tmp_path, bundle_dir, syn8):
    out = tmp_path / "eval"
    calls = []
    real = runtime.model.VLM.answer

    def counted(self, *a, **k):
        calls.append(k)
        return real(self, *a, **k)
    rc, stdout, err = None, None, None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.model.VLM, "answer", counted)
        rc, stdout, err = _run(bundle_dir("tiny"), syn8, "--max-new-tokens", "3", "--out", out, "--quiet")
    assert rc == 0, err
    assert len(calls) == 4 * 8                          # baseline+influence, ScalingVis, AdaptVis, blank
    assert sum(bool(k.get("measure_image_influence")) for k in calls) == 8
    doc = json.loads((out / "evaluation.json").read_text())
    (name, part), = doc["subsets"].items()
    assert name == "Controlled_Synthetic" and part["n"] == 8
    st = part["settings"]
    assert st["adaptvis"] == {"alpha_low": 0.5, "alpha_high": 1.5, "threshold": 0.4,
                                   "round_confidence": False, "apply_to": "last_token"}
    assert st["adaptvis_source"].startswith("paper") and st["scalingvis_alpha"] == 0.8
    for m in ("baseline", "scalingvis", "adaptvis"):
        assert {"accuracy", "pair_accuracy", "set_accuracy", "n"} <= set(part["methods"][m])
        assert 0 <= part["methods"][m]["accuracy"] <= 100
    inf = part["influence"]
    assert inf["all"]["n"] == 8 == inf["correct"]["n"] + inf["incorrect"]["n"]
    assert 0 <= inf["all"]["mean_tv_distance"] <= 1 and 0 <= inf["all"]["first_token_changed"] <= 100
    h = part["histograms"]
    assert h["categories"] == ["left", "right", "on", "under", "other"]
    for cond in ("with image", "blank image"):
        assert sum(sum(h["counts"][s][cond].values()) for s in ("correct", "incorrect")) == 8
    assert sum(h["counts"]["correct"]["with image"].values()) == inf["correct"]["n"]
    assert (out / part["histogram_png"]).read_bytes()[:8] == PNG
    md = (out / "evaluation.md").read_text()
    assert "| baseline |" in md and "| ScalingVis |" in md and "| AdaptVis |" in md and "TV distance" in md
    assert "Controlled_Synthetic (n=8)" in stdout

    # Again: everything comes from the cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.model.VLM, "answer", counted)
        rc, stdout, err = _run(bundle_dir("tiny"), syn8, "--max-new-tokens", "3", "--out", out, "--quiet")
    assert rc == 0 and len(calls) == 32
    assert json.loads((out / "evaluation.json").read_text())["subsets"][name]["methods"] == part["methods"]


def test_settings_come_from_calibration_then_flags(tmp_path, bundle_dir, syn8):
    bundle = shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")
    write_calibration(bundle, {"schema_version": 1, "adaptvis": {
        "alpha_low": 0.8, "alpha_high": 2.0, "threshold": 0.05, "round_confidence": False, "apply_to": "last_token"},
        "dataset": {"subset": "Controlled_Synthetic"}, "metrics": {"test": {"scalingvis": {"alpha": 1.2}}}})
    out = tmp_path / "eval"
    rc, _, err = _run(bundle, syn8, "--max-new-tokens", "2", "--out", out, "--quiet", "--no-influence", "--limit", "4")
    assert rc == 0, err
    part = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]
    assert part["settings"]["adaptvis"]["alpha_low"] == 0.8 and part["settings"]["adaptvis"]["threshold"] == 0.05
    assert part["settings"]["adaptvis_source"] == "bundle calibration.json, calibrated on Controlled_Synthetic"
    assert part["settings"]["scalingvis_alpha"] == 1.2 and "influence" not in part and part["n"] == 4
    rc, _, err = _run(bundle, syn8, "--max-new-tokens", "2", "--out", out, "--quiet", "--no-influence", "--limit", "4",
                      "--adaptvis", "0.5,1.2,0.3", "--scalingvis-alpha", "2.0")
    assert rc == 0, err
    st = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]["settings"]
    assert (st["adaptvis"]["alpha_low"], st["adaptvis"]["alpha_high"], st["adaptvis"]["threshold"]) == (0.5, 1.2, 0.3)
    assert st["adaptvis_source"] == "--adaptvis" and st["scalingvis_alpha"] == 2.0
    with pytest.raises(SystemExit):
        _run(bundle, syn8, "--adaptvis", "0.5,1.2")


@pytest.mark.parametrize("where, value", [("scalingvis", 1e38), ("adaptvis", 1e38)])
def test_a_calibration_alpha_out_of_range_is_refused(tmp_path, bundle_dir, syn8, where, value):
    """Both readers of calibration.json: the runtime's (the AdaptVis) and evaluate's (the best constant alpha)."""
    bundle = shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")
    adaptvis = {"alpha_low": 0.5, "alpha_high": value if where == "adaptvis" else 1.5, "threshold": 0.4}
    scaling = value if where == "scalingvis" else 1.2
    plant_file(bundle, "calibration.json", json.dumps({"schema_version": 1, "adaptvis": adaptvis,
                                                       "metrics": {"test": {"scalingvis": {"alpha": scaling}}}}).encode())
    rc, _, err = _run(bundle, syn8, "--max-new-tokens", "2", "--out", tmp_path / "eval", "--quiet", "--limit", "4")
    assert rc == 2 and "BundleError" in err and r"must lie in [0.01, 100]" in err, err
    assert ("metrics.test.scalingvis.alpha must lie" in err) == (where == "scalingvis")


@pytest.mark.parametrize("flag", [["--scalingvis-alpha", "1e38"], ["--adaptvis", "0.5,3e38,0.3"],
                                  ["--adaptvis", "0.001,1.5,0.3"]])
def test_flag_alphas_out_of_range_are_refused(tmp_path, syn8, flag, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path / "no-bundle", syn8, *flag)
    assert "must lie in [0.01, 100]" in capsys.readouterr().err


def test_metrics_with_known_answers(tmp_path):
    """With the stand-in model the three methods' accuracies are known exactly."""
    ds = generate(tmp_path / "syn", n=16, seed=11, size=64)
    (ws,) = load_worksets([ds], err=io.StringIO())
    with ResultCache(None) as cache:
        r = Runner(FakeVLM(tmp_path / "fake"), cache, 2, progress=False)
        part = ev.evaluate_items(r, ws, 0.5, runtime.AdaptVis(0.5, 1.5, 0.3))
    low = sum(confidence_of(it.image_path.name) < 0.3 for it in ws.items)
    m = part["methods"]
    assert m["baseline"]["accuracy"] == 0.0
    assert m["scalingvis"]["accuracy"] == pytest.approx(100.0 * low / 16)
    assert m["adaptvis"]["accuracy"] == 100.0 and m["adaptvis"]["set_accuracy"] == 100.0
    assert m["adaptvis"]["n_alpha_low"] == low
    h = part["histograms"]["counts"]
    assert h["correct"] == {"with image": {}, "blank image": {}}
    assert h["incorrect"]["with image"] == {"other": 16} == h["incorrect"]["blank image"]
    assert part["influence"]["all"]["mean_tv_distance"] == pytest.approx(0.25)


class PriorVLM(FakeVLM):
    """Right about shapes and about things in their familiar relation, wrong otherwise (whatever
    the steering); about a blank image it always says "On"."""

    def __init__(self, folder, right: set):
        super().__init__(folder)
        self.right = right                               # image file names answered correctly
        self.default_steering = runtime.AdaptVis(0.5, 1.5, 0.3)

    def answer(self, image, question, **kw):
        ans = super().answer(image, question, **kw)
        if isinstance(image, (str, Path)) and Path(image).parent.name == "images":
            name = Path(image).name
            gold = GOLD["_".join(name.rsplit(".", 1)[0].split("_")[1:-1])]
            text = f"{gold.capitalize()}." if name in self.right else "Nothing."
        else:
            text = "On."
        return dataclasses.replace(ans, text=text)


def test_breakdown_by_kind_and_prior(tmp_path, monkeypatch):
    ds = generate(tmp_path / "syn", n=16, seed=3, size=64)        # 8 shapes, 8 things (2 familiar)
    (ws,) = load_worksets([ds], err=io.StringIO())
    right = {it.image_path.name for it in ws.items if it.kind == "shape" or it.familiar}
    vlm = PriorVLM(tmp_path / "fake", right)
    monkeypatch.setattr(runtime, "load", lambda *a, **k: vlm)
    out = tmp_path / "eval"
    rc, _, err = _run(tmp_path / "fake", ds, "--out", out, "--quiet", "--max-new-tokens", "2")
    assert rc == 0, err
    part = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]
    b = part["breakdown"]
    assert list(b) == ["kind=shape", "kind=thing", "familiar", "unfamiliar"]
    assert [b[k]["n"] for k in b] == [8, 8, 2, 6]

    def on_share(member):                                 # the blind "On" is right where gold is "on"
        its = [it for it in ws.items if member(it)]
        return 100.0 * sum(it.gold == "on" for it in its) / len(its)
    blind = {"kind=shape": on_share(lambda it: it.kind == "shape"), "kind=thing": on_share(lambda it: it.kind == "thing"),
             "familiar": on_share(lambda it: it.familiar is True), "unfamiliar": on_share(lambda it: it.familiar is False)}
    for k, acc in {"kind=shape": 100.0, "kind=thing": 25.0, "familiar": 100.0, "unfamiliar": 0.0}.items():
        assert {m: b[k][m] for m in ("baseline", "scalingvis", "adaptvis")} == dict.fromkeys(
            ("baseline", "scalingvis", "adaptvis"), acc), k
        assert b[k]["blind"] == pytest.approx(blind[k]), k
    assert b["kind=shape"]["blind"] == 25.0                 # each shape pair in all four relations
    assert part["methods"]["baseline"]["accuracy"] == 100.0 * 10 / 16

    md = (out / "evaluation.md").read_text()
    assert "### By object kind and language prior" in md
    assert "| items | n | baseline | ScalingVis (0.8) | AdaptVis | blind |" in md
    assert "| kind=shape | 8 | 100.0 | 100.0 | 100.0 | 25.0 |" in md
    assert "| unfamiliar | 6 | 0.0 | 0.0 | 0.0 |" in md

    # Without the blind test: no blind column.  Without kind/familiar (WhatsUp-like items): no breakdown.
    with ResultCache(None) as cache:
        r = Runner(vlm, cache, 2, progress=False)
        part = ev.evaluate_items(r, ws, 0.5, runtime.AdaptVis(0.5, 1.5, 0.3), influence=False)
        assert "blind" not in part["breakdown"]["kind=thing"] and part["breakdown"]["kind=thing"]["adaptvis"] == 25.0
        ws.items = [dataclasses.replace(it, kind=None, familiar=None) for it in ws.items]
        assert "breakdown" not in ev.evaluate_items(r, ws, 0.5, runtime.AdaptVis(0.5, 1.5, 0.3))


# ------------------------------------------------------------------ attention on the objects' boxes

def test_alignment_with_known_maps(tmp_path):
    """Alpha = 1 and alpha_low spread attention evenly (share = the boxes' area), alpha_high puts it all
    on box A: the report's groups must say exactly that."""
    ds = generate(tmp_path / "syn", n=16, seed=11, size=64)
    (ws,) = load_worksets([ds], err=io.StringIO())
    boxes = {it.image_path.name: it.boxes for it in ws.items}
    assert all(min(b["A"][2] - b["A"][0], b["A"][3] - b["A"][1]) >= 4 for b in boxes.values())   # > 2 cells
    vlm = AttentionFakeVLM(tmp_path / "fake", boxes)
    steering = runtime.AdaptVis(LOW_ALPHA, HIGH_ALPHA, SPLIT)
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        r = Runner(vlm, cache, 2, progress=False)
        part = ev.evaluate_items(r, ws, 0.5, steering)
    assert vlm.attention_calls == 16                              # the AdaptVis pass only
    al = part["alignment"]
    low = [confidence_of(it.image_path.name) < SPLIT for it in ws.items]
    assert al["n"] == al["n_with_boxes"] == 16 and al["num_layers"] == 3 and al["middle_layers"] == [0, 3]
    g = al["groups"]
    assert list(g) == ["all", "adaptvis_correct", "baseline_incorrect", "alpha_low", "alpha_high"]
    assert g["alpha_low"]["n"] == sum(low) and g["alpha_high"]["n"] == 16 - sum(low)
    assert g["adaptvis_correct"]["n"] == 16 and g["baseline_incorrect"]["n"] == 16

    def area(names, key):
        its = [it for it in ws.items if it.image_path.name in names]
        return 100 * sum(_area(it.boxes, key) for it in its) / len(its)
    high_names = {it.image_path.name for it, lo in zip(ws.items, low) if not lo}
    low_names = {it.image_path.name for it, lo in zip(ws.items, low) if lo}
    for name, v in g.items():
        for key in ("A", "B", "union"):
            assert v["alpha_1"][key] == pytest.approx(v["chance"][key], abs=1e-3), (name, key)   # uniform = chance
            assert v["per_layer"]["alpha_1"][key] == pytest.approx([v["chance"][key]] * 3, abs=1e-3)
    assert g["alpha_high"]["chosen_alpha"]["A"] == pytest.approx(100.0)
    assert g["alpha_high"]["chosen_alpha"]["union"] == pytest.approx(100.0)
    assert g["alpha_high"]["chance"]["A"] == pytest.approx(area(high_names, "A"), abs=1e-3)
    assert g["alpha_low"]["chosen_alpha"]["A"] == pytest.approx(area(low_names, "A"), abs=1e-3)
    n_high = len(high_names)
    assert g["all"]["chosen_alpha"]["A"] == pytest.approx((100 * n_high + area(low_names, "A") * len(low_names)) / 16,
                                                          abs=1e-3)

    from evaluation.report import _alignment
    md = "\n".join(_alignment(al))
    assert "### Attention on the objects" in md and "| alpha_high applied |" in md
    assert "| items | n | chance | alpha = 1 | chosen alpha | change |" in md

    # The cache holds the numbers, not the maps; a second run asks for nothing.
    recs = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    av = [x for x in recs if x["pass"].startswith("adaptvis=")]
    assert len(av) == 16 and all(set(x["alignment"]) == {"confidence", "rescaled", "area"} for x in av)
    assert all(len(x["alignment"]["rescaled"]["A"]) == 3 for x in av)
    assert all("alignment" not in x for x in recs if not x["pass"].startswith("adaptvis="))
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        r = Runner(vlm, cache, 2, progress=False)
        again = ev.evaluate_items(r, ws, 0.5, steering)
    assert r.model_calls == 0 and again["alignment"] == al


def _area(boxes, key):
    from evaluation.alignment import area_fractions

    return area_fractions({k: boxes[k] for k in ("A", "B")}, (0, 0, 64, 64), (32, 32))[key]


def test_alignment_is_na_without_attention_outputs(tmp_path):
    """A model that cannot report attention (a bundle exported before the outputs): n/a, and the passes
    run as before (the stand-in has no return_attention argument at all)."""
    ds = generate(tmp_path / "syn", n=8, seed=11, size=64)
    (ws,) = load_worksets([ds], err=io.StringIO())
    with ResultCache(None) as cache:
        part = ev.evaluate_items(Runner(FakeVLM(tmp_path / "fake"), cache, 2, progress=False), ws, 0.5,
                                 runtime.AdaptVis(0.5, 1.5, 0.3))
    assert part["alignment"] == {"n_with_boxes": 8, "n": 0,
                                 "note": "n/a: the bundle's decoder has no attention outputs (exported before "
                                         "them); re-export it"}
    from evaluation.report import _alignment
    assert "re-export it" in "\n".join(_alignment(part["alignment"]))
    ws.items = [dataclasses.replace(it, boxes=None) for it in ws.items]        # no boxes: no section at all
    with ResultCache(None) as cache:
        part = ev.evaluate_items(Runner(AttentionFakeVLM(tmp_path / "fake", {}), cache, 2, progress=False), ws, 0.5,
                                 runtime.AdaptVis(0.5, 1.5, 0.3))
    assert "alignment" not in part


def test_alignment_on_the_tiny_bundle_and_old_cache_entries(tmp_path, bundle_dir, syn8):
    out = tmp_path / "eval"
    calls = []
    real = runtime.model.VLM.answer

    def counted(self, *a, **k):
        calls.append(k)
        return real(self, *a, **k)
    args = (bundle_dir("tiny"), syn8, "--max-new-tokens", "2", "--out", out, "--quiet", "--no-influence")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.model.VLM, "answer", counted)
        rc, stdout, err = _run(*args)
    assert rc == 0, err
    assert len(calls) == 3 * 8 and sum(bool(k.get("return_attention")) for k in calls) == 8
    assert all(k["steering"].__class__.__name__ == "AdaptVis" for k in calls if k.get("return_attention"))
    part = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]
    al = part["alignment"]
    assert al["n"] == 8 and al["num_layers"] == 2
    g = al["groups"]["all"]
    for key in ("A", "B", "union"):
        assert 0.0 < g["chance"][key] < 100.0
        for p in ("alpha_1", "chosen_alpha"):
            assert 0.0 <= g[p][key] <= 100.0 and len(g["per_layer"][p][key]) == 2
    assert g["chance"]["union"] <= g["chance"]["A"] + g["chance"]["B"] + 1e-9
    assert "### Attention on the objects" in (out / "evaluation.md").read_text()
    assert "attention in the boxes:" in stdout

    # An AdaptVis entry cached before alignment existed: recomputed once, the rest served from the cache.
    cache = out / "cache.jsonl"
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    for x in lines:
        x.pop("alignment", None)
    cache.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.model.VLM, "answer", counted)
        rc, _, err = _run(*args)
    assert rc == 0, err
    assert len(calls) == 3 * 8 + 8 and all(k.get("return_attention") for k in calls[24:])
    again = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]
    assert again["alignment"] == al and again["methods"] == part["methods"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.model.VLM, "answer", counted)
        rc, _, err = _run(*args)
    assert rc == 0 and len(calls) == 32


def test_evaluate_without_matplotlib(tmp_path, monkeypatch):
    """No matplotlib: one line saying which extra to install, every other output written."""
    ds = generate(tmp_path / "syn", n=8, seed=3, size=64)
    vlm = FakeVLM(tmp_path / "fake")
    vlm.default_steering = runtime.AdaptVis(0.5, 1.5, 0.3)
    monkeypatch.setattr(runtime, "load", lambda *a, **k: vlm)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "eval"
    rc, stdout, err = _run(tmp_path / "fake", ds, "--out", out, "--quiet", "--max-new-tokens", "2")
    assert rc == 0, err
    assert err.splitlines() == ["plots skipped: pip install 'adaptvis-edge[calibration]' for matplotlib"]
    part = json.loads((out / "evaluation.json").read_text())["subsets"]["Controlled_Synthetic"]
    assert "histograms" in part and "histogram_png" not in part
    assert not list(out.glob("*.png"))
    md = (out / "evaluation.md").read_text()
    assert "TV distance" in md and "](answers_" not in md
    assert "Controlled_Synthetic (n=8)" in stdout
