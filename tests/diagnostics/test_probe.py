"""diagnostics.probe: a probe that must reach 100 %, one that must stay at chance, and the CLI."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diagnostics import probe as pr
from diagnostics.__main__ import main

RELATIONS = ("left_of", "right_of", "on", "under")
GOLD = {"left_of": "left", "right_of": "right", "on": "on", "under": "under"}


def clusters(n: int, d: int, k: int, seed: int, sep: float = 2.0):
    """The label a linear function of the features: each class sits at its own centre (``sep`` noise sd
    per feature, at random), under nuisance scales and offsets per feature, so hyperplanes separate the
    classes with a margin of several noise sd (at 20 features) to tens of them (at 3000)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(0, sep, (k, d))
    X = centres[y] + rng.normal(size=(n, d))
    X = X * rng.uniform(0.1, 10.0, d) + rng.normal(0, 50, d)
    return X, [f"class{c}" for c in y]


@pytest.mark.parametrize("d", [20, 3000])          # fewer and more features than training items
def test_a_linearly_determined_label_is_learned_exactly(d):
    X, y = clusters(600, d, 4, seed=d)
    p = pr.fit_probe(X[:300], y[:300])
    assert p.classes == ("class0", "class1", "class2", "class3")
    assert pr.accuracy(p.predict(X[300:]), y[300:]) == 100.0
    assert pr.accuracy(p.predict(X[:300]), y[:300]) == 100.0
    assert p.weights.shape == (d, 4) and p.iterations < 100


def test_the_fit_is_the_l2_optimum():
    """The gradient of sum(CE) + ||W||^2 / (2C) vanishes at the fit, also when it runs on the Gram matrix."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 200))
    y = list(rng.integers(0, 3, 60))
    C = 0.5
    p = pr.fit_probe(X, y, C=C)
    Z = (X - p.mean) / p.std
    P = pr._softmax(p.scores(X))
    Y = np.eye(3)[[p.classes.index(v) for v in y]]
    grad_w = Z.T @ (P - Y) + p.weights / C
    grad_b = (P - Y).sum(axis=0)
    assert np.abs(grad_w).max() < 1e-6 and np.abs(grad_b).max() < 1e-6


@pytest.mark.parametrize("d", [50, 2000])
def test_random_labels_stay_at_chance(d):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(1200, d))
    y = list(rng.integers(0, 4, 1200))
    p = pr.fit_probe(X[:400], y[:400])
    train, test = pr.accuracy(p.predict(X[:400]), y[:400]), pr.accuracy(p.predict(X[400:]), y[400:])
    assert 15.0 <= test <= 35.0                      # chance 25 %, 800 test items: sd 1.5 points
    assert train > test                              # it memorises; it cannot generalise


def test_fit_probe_rejects_what_it_cannot_fit():
    with pytest.raises(ValueError, match="two or more"):
        pr.fit_probe(np.ones((4, 3)), ["a"] * 4)
    with pytest.raises(ValueError, match="one label per row"):
        pr.fit_probe(np.ones((4, 3)), ["a", "b"])
    p = pr.fit_probe(np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), ["a", "a", "b", "b"])   # a constant feature
    assert p.predict(np.array([[0.0, 5.0], [3.0, 5.0]])) == ["a", "b"]


def test_pool_tokens():
    tokens = np.arange((1 + 4 * 4) * 2, dtype=np.float32).reshape(17, 2)      # CLS + a 4 x 4 grid, 2 channels
    flat = pr.pool_tokens(tokens, (4, 4), True, "flatten", max_grid=6)
    assert flat.shape == (17 * 2,) and flat[-2:].tolist() == [0.0, 1.0]      # the grid as is, then CLS
    assert flat[:2].tolist() == tokens[1].tolist()
    pooled = pr.pool_tokens(tokens, (4, 4), True, "flatten", max_grid=2)   # 2 x 2 cells of 2 x 2 patches
    patches = tokens[1:].reshape(4, 4, 2)
    assert pooled.shape == (5 * 2,)
    assert pooled[:2].tolist() == patches[:2, :2].mean(axis=(0, 1)).tolist()
    assert pooled[6:8].tolist() == patches[2:, 2:].mean(axis=(0, 1)).tolist()
    assert pr.pool_tokens(tokens, (4, 4), True, "mean").tolist() == tokens.mean(axis=0).tolist()
    assert pr.pool_tokens(tokens[1:], (4, 4), False, "flatten", 3).shape == (3 * 3 * 2,)   # 4 -> 3: bins 2, 1, 1


# ------------------------------------------------------------------------------ the CLI on a tiny bundle

COLOURS = {"left_of": (220, 30, 30), "right_of": (30, 200, 40), "on": (30, 40, 220), "under": (230, 220, 30)}


def controlled_set(root: Path, groups: int, seed: int, coloured: bool) -> Path:
    """A Controlled_Images_A-format set: each (obj, ref) group in the four relations.  ``coloured``: the
    image's colour is the relation's (a probe on the eyes must get every answer); else smooth random blobs
    whatever the relation (it cannot beat chance)."""
    from tests.conftest import random_image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    recs = []
    for g in range(groups):
        for rel in RELATIONS:
            name = f"obj{g}_{rel}_ref{g}.png"
            if coloured:
                img = np.clip(np.array(COLOURS[rel]) * rng.uniform(0.7, 1.1) + rng.normal(0, 12, (36, 36, 3)), 0, 255)
                img = img.astype(np.uint8)
            else:
                img = random_image(int(rng.integers(1 << 30)), 36, 36)
            Image.fromarray(img).save(root / "images" / name)
            recs.append({"image_path": f"images/{name}", "caption_options": [f"obj{g} {rel} ref{g}", "x"]})
    path = root / "controlled_images_dataset.json"
    path.write_text(json.dumps(recs))
    return path


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = main(["probe", *map(str, argv)], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_probe_cli_on_the_eyes_that_know(tmp_path, bundle_dir):
    ds = controlled_set(tmp_path / "coloured", groups=10, seed=0, coloured=True)
    out = tmp_path / "out"
    rc, stdout, err = _run(bundle_dir("tiny"), ds, "--out", out, "--max-new-tokens", "2", "--quiet")
    assert rc == 0, err
    doc = json.loads((out / "probe.json").read_text())
    for key in ("probe_accuracy", "vlm_accuracy", "blind_accuracy", "adaptvis_accuracy", "n_train", "n_test"):
        assert key in doc, key
    assert doc["n_train"] == 20 and doc["n_test"] == 20 and doc["split"]["groups_kept_whole"]
    assert doc["probe_accuracy"] == 100.0                      # the colour names the relation
    assert 0.0 <= doc["vlm_accuracy"] <= 100.0 and 0.0 <= doc["blind_accuracy"] <= 100.0
    assert doc["classes"] == ["left", "on", "right", "under"]
    assert doc["features"] == {"source": "vision graph: projected image tokens", "pool": "flatten", "max_grid": 6,
                               "dims": 25 * 64, "image_tokens": 25, "grid": [5, 5], "cls_token": False}
    assert doc["run"]["model_calls"] == 3 * 20                 # unsteered, blank, AdaptVis on each test item
    md = (out / "probe.md").read_text()
    assert "| linear probe on the image features | 100.0 |" in md and "| the VLM, blind (blank image) |" in md
    assert "probe 100.0 %" in stdout

    # Again, with mean pooling and without AdaptVis: the VLM's answers come from the cache.
    rc, _, err = _run(bundle_dir("tiny"), ds, "--out", out, "--max-new-tokens", "2", "--quiet", "--pool", "mean",
                      "--no-adaptvis")
    assert rc == 0, err
    doc = json.loads((out / "probe.json").read_text())
    assert doc["run"]["model_calls"] == 0 and doc["adaptvis_accuracy"] is None and doc["features"]["dims"] == 64


def test_probe_cli_on_eyes_that_cannot_know(tmp_path, bundle_dir):
    ds = controlled_set(tmp_path / "blobs", groups=50, seed=1, coloured=False)
    out = tmp_path / "out"
    rc, _, err = _run(bundle_dir("tiny-mha"), ds, "--out", out, "--max-new-tokens", "1", "--quiet", "--no-adaptvis")
    assert rc == 0, err
    doc = json.loads((out / "probe.json").read_text())
    assert doc["n_test"] == 100 and doc["features"]["cls_token"] and doc["features"]["dims"] == 17 * 48
    assert 10.0 <= doc["probe_accuracy"] <= 40.0               # chance 25 %, sd 4.3 points
    assert "not clearly above chance" in (out / "probe.md").read_text()


def test_probe_cli_errors(tmp_path, bundle_dir):
    ds = controlled_set(tmp_path / "one", groups=1, seed=0, coloured=True)
    rc, _, err = _run(bundle_dir("tiny"), ds, "--out", tmp_path / "o")
    assert rc == 2 and "test=0" in err                         # one group: nothing to test on
    with pytest.raises(SystemExit):
        _run(bundle_dir("tiny"), ds, "--train-fraction", "1.5")
    rc, _, err = _run(tmp_path / "nope", ds, "--out", tmp_path / "o")
    assert rc == 2 and "BundleError" in err
