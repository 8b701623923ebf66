"""The result cache, the pass runner and the item selection (with a stand-in model: fast)."""
from __future__ import annotations

import io
import json

import pytest

from evaluation.cache import ResultCache, make_key
from evaluation.runner import BLANK, NONE, Runner, alpha_name, baseline, blank, scaling
from readers.datasets import load_dataset
from readers.workset import limit_items, load_worksets
from scenes.synthetic import generate

from .fakes import FakeVLM


@pytest.fixture(scope="module")
def syn16(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn16"), n=16, seed=1, size=64)


def test_cache_roundtrip_and_torn_line(tmp_path):
    path = tmp_path / "c.jsonl"
    with ResultCache(path) as c:
        c.put({"key": "a", "text": "1"})
        c.put({"key": "b", "text": "2"})
        c.put({"key": "a", "text": "3"})                 # the last line for a key wins
    with open(path, "ab") as f:
        f.write(b'{"key": "c", "te')                     # a run killed mid-write
    c = ResultCache(path)
    assert len(c) == 2 and c.get("a")["text"] == "3" and c.skipped_lines == 1
    c.put({"key": "d", "text": "4"})                     # appended on a fresh line
    c.close()
    again = ResultCache(path)
    assert sorted(r["key"] for r in again.records()) == ["a", "b", "d"] and again.skipped_lines == 1
    assert make_key("s", "X/1", "dd", "alpha=0.5", 4) == "s|X/1|dd|alpha=0.5|4"


def test_runner_caches_every_pass_once(tmp_path, syn16):
    items = load_dataset(syn16).items[:4]
    vlm = FakeVLM(tmp_path / "fake")
    passes = [baseline(), scaling(0.5), scaling(1.5), blank()]
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        r = Runner(vlm, cache, max_new_tokens=3, progress=False)
        res = r.run([(it, p) for it in items for p in passes])
        assert r.model_calls == 16 and r.cache_hits == 0 and len(res) == 16
        # Item-major order: all passes of an image run back to back (the runtime's prefix cache).
        assert [c[0] for c in vlm.calls[:3]] == [items[0].image_path.name] * 3
        assert res[(items[0].id, alpha_name(0.5))]["max_new_tokens"] == 3
        assert res[(items[0].id, BLANK)]["text"] == "Nothing."
        again = r.run([(it, p) for it in items for p in passes])
        assert r.model_calls == 16 and r.cache_hits == 16 and again == res
        # A baseline that must measure the image influence is not served by one that did not.
        infl = r.run([(it, baseline(influence=True)) for it in items])
        assert r.model_calls == 20 and all(v["influence"]["tv_distance"] == 0.25 for v in infl.values())
        assert r.run([(items[0], baseline())])[(items[0].id, NONE)]["influence"] is not None
    # Another max_new_tokens or another bundle is another key.
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        r = Runner(vlm, cache, max_new_tokens=4, progress=False)
        r.run([(items[0], baseline())])
        assert r.model_calls == 1
        r = Runner(vlm, cache, max_new_tokens=3, progress=False, bundle="0" * 64)
        r.run([(items[0], baseline())])
        assert r.model_calls == 1


def test_runner_reports_a_failed_item_and_goes_on(tmp_path):
    ds = generate(tmp_path / "syn", n=8, seed=2, size=64)
    items = load_dataset(ds).items
    items[3].image_path.unlink()                        # gone after loading
    err = io.StringIO()
    with ResultCache(None) as cache:
        r = Runner(FakeVLM(tmp_path / "fake"), cache, max_new_tokens=2, progress=False, err=err)
        res = r.run([(it, p) for it in items for p in (baseline(), scaling(0.5))])
    assert set(r.failures) == {items[3].id}
    assert len(res) == 2 * 7 and all(k[0] != items[3].id for k in res)
    assert items[3].source in err.getvalue() and "skipped" in err.getvalue()


def test_limit_items_keeps_groups_whole(syn16):
    items = load_dataset(syn16).items
    got = limit_items(items, 10)
    groups = {it.group for it in got}
    assert len(got) == 8 and len(groups) == 2
    assert all(sum(it.group == g for it in items) == sum(it.group == g for it in got) for g in groups)
    assert limit_items(items, 3) == [it for it in items if it.group == items[0].group]   # at least one group
    assert limit_items(items, None) == items and limit_items(items, 100) == items


def test_load_worksets_prints_problems_with_file_and_line(tmp_path):
    ds = generate(tmp_path / "syn", n=8, seed=4, size=64)
    recs = json.loads(ds.read_text())
    (ds.parent / recs[2]["image_path"]).unlink()
    ds.write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")   # record k on line k + 2
    err = io.StringIO()
    (ws,) = load_worksets([ds.parent], err=err)
    assert len(ws.items) == 7 and ws.n_loaded == 7 and len(ws.problems) == 1
    assert f"{ds}:4:" in err.getvalue() and "image not found" in err.getvalue()
