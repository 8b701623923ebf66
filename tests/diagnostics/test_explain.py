"""diagnostics.explain: the PNG on the tiny bundles, the layer argument, and no matplotlib."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from diagnostics import explain as ex
from diagnostics.__main__ import main
from tests.conftest import random_image

PNG = b"\x89PNG\r\n\x1a\n"


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(["explain", *map(str, argv)], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(random_image(5, 40, 56)).save(path)           # not square: the crop cuts the sides
    return path


def test_explain_writes_a_legible_png(tmp_path, bundle_dir, size, image):
    out = tmp_path / "deep" / "why.png"
    rc, stdout, err = _run(bundle_dir(size), image, "Where is the red cup in relation to the table?", "--out", out,
                           "--max-new-tokens", "3", "--box", "A=5,5,20,30", "--box", "B=20,10,50,35")
    assert rc == 0, err
    assert out.read_bytes()[:8] == PNG
    with Image.open(out) as im:
        assert im.width >= 300 and im.height >= 300
        assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 50      # a picture, not a blank canvas
    assert "answer:" in stdout and "confidence:" in stdout and "inside box A" in stdout and f"wrote {out}" in stdout
    assert "layers:     0..1 of 2" in stdout                  # the middle half of 2 layers: both


def test_explain_numbers(bundle_dir, image):
    import runtime

    vlm = runtime.load(bundle_dir("tiny"))
    e = ex.explain(vlm, image, "Where is the cup?", runtime.AdaptVis(0.5, 1.5, 0.99), layers="1:",
                   boxes={"all": [-100, -100, 500, 500]}, max_new_tokens=2)
    assert e.layers == (1, 2) and e.alpha == 0.5 and e.confidence < 0.99
    ans = vlm.answer(image, "Where is the cup?", steering=runtime.AdaptVis(0.5, 1.5, 0.99), max_new_tokens=2,
                     return_attention=True)
    for k in ("confidence", "rescaled"):
        assert np.allclose(e.maps[k], ans.attention[k].maps[1])
        assert e.box_shares[k]["all"] == pytest.approx(1.0)
    assert e.box == ans.attention["confidence"].box and e.box[0] > 0          # 56 px wide, cropped to a square
    with pytest.raises(TypeError):
        ex.explain(vlm, image, "Where?", runtime.ScalingVis(1.2))


def test_parse_layers():
    assert ex.parse_layers(None, 30) == (7, 23) and ex.parse_layers(None, 2) == (0, 2)
    assert ex.parse_layers("3:5", 30) == (3, 5) and ex.parse_layers("4", 30) == (4, 5)
    assert ex.parse_layers(":2", 30) == (0, 2) and ex.parse_layers("-2:", 30) == (28, 30)
    assert ex.parse_layers("-1", 30) == (29, 30) and ex.parse_layers("0:100", 4) == (0, 4)
    for bad in ("5:3", "x", "40", "1:2:3"):
        with pytest.raises(ValueError):
            ex.parse_layers(bad, 30)


def test_explain_bad_arguments(tmp_path, bundle_dir, image):
    rc, _, err = _run(bundle_dir("tiny"), image, "Where?", "--layers", "5:9", "--out", tmp_path / "x.png")
    assert rc == 2 and "selects no layer" in err and not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit):
        _run(bundle_dir("tiny"), image, "Where?", "--box", "A=1,2,3")
    rc, _, err = _run(bundle_dir("tiny"), tmp_path / "missing.png", "Where?")
    assert rc == 2 and "ImageError" in err


def test_without_matplotlib_it_says_which_extra_and_writes_nothing(tmp_path, bundle_dir, image, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # import matplotlib -> ImportError
    out = tmp_path / "why.png"
    rc, stdout, err = _run(bundle_dir("tiny"), image, "Where is the cup?", "--out", out, "--max-new-tokens", "2")
    assert rc == 1 and not out.exists()
    assert err == "plots skipped: pip install 'adaptvis-edge[calibration]' for matplotlib\n"
    assert "answer:" in stdout and "confidence:" in stdout       # the numbers still come out


def test_default_png_goes_under_build_explain(tmp_path, bundle_dir, image, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run(bundle_dir("tiny"), image, "Where is the cup?", "--max-new-tokens", "2")
    assert rc == 0, err
    target = tmp_path / "build" / "explain" / "scene_explain.png"
    assert target.read_bytes()[:8] == PNG and "wrote build/explain/scene_explain.png" in stdout
    assert [p.name for p in tmp_path.glob("*.png")] == ["scene.png"]     # only the input in the folder it ran from


def test_sink_patches_are_hot_on_the_image_and_on_a_blank_copy():
    even = np.ones((6, 6))
    image = even.copy()
    image[0, 0] = image[3, 3] = 30                              # a corner, and an object
    blank = even.copy()
    blank[0, 0] = blank[5, 5] = 30                              # the corner again, and a patch hot only when blank
    assert np.argwhere(ex.sink_patches(blank, image)).tolist() == [[0, 0]]
    assert np.argwhere(ex.sink_patches(blank, even, image)).tolist() == [[0, 0]]   # hot in either pass
    assert not ex.sink_patches(even, image).any() and not ex.sink_patches(blank, even).any()
    near = even.copy()
    near[0, 0] = 3                                              # 3 / 38 of the map: under 4 even shares
    assert not ex.sink_patches(near, near).any()


def test_sinks_are_marked_and_do_not_set_the_colour_scale(tmp_path, bundle_dir, image):
    import dataclasses

    import runtime

    vlm = runtime.load(bundle_dir("tiny"))
    e = ex.explain(vlm, image, "Where is the cup?", runtime.AdaptVis(0.5, 1.5, 0.99), max_new_tokens=2)
    assert e.sinks.shape == e.maps["confidence"].shape == e.blank_map.shape and e.sinks.dtype == bool
    maps = {k: m.copy() for k, m in e.maps.items()}
    maps["confidence"][0, 0] = 10.0
    sinks = np.zeros_like(e.sinks)
    sinks[0, 0] = True
    marked = dataclasses.replace(e, maps=maps, sinks=sinks, blank_map=maps["confidence"])
    others = max(float(np.delete(m.ravel(), 0).max()) for m in maps.values())
    assert ex.colour_max(marked) == pytest.approx(others) and others < 10.0
    assert ex.colour_max(dataclasses.replace(marked, sinks=np.zeros_like(sinks))) == 10.0
    assert "sink patch: row 0, column 0" in ex.describe(marked)
    assert ex.render(marked, tmp_path / "sink.png").read_bytes()[:8] == PNG
