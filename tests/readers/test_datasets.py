from __future__ import annotations

import json
from pathlib import Path

import pytest

from readers.datasets import (
    find_datasets, load_dataset, parse_controlled_name, read_controlled, read_qa, read_vsr,
)
from readers.errors import DatasetError, DatasetNotFoundError, UnknownFormatError
from readers.jsonscan import ScanError, ScanRecord, scan_json_list
from tests.readers.fake_files import dumps_lines, problems_by_line, touch


def _caps(a: str, b: str, first: str) -> list[str]:
    phr = ["on", "under", "to the left of", "to the right of"]
    order = [first] + [p for p in phr if p != first]
    return [f"A {a} {p} a {b}" for p in order]


# ----------------------------------------------------------------- Controlled A


def _controlled_a(tmp_path: Path) -> Path:
    for name in ("beer-bottle_on_armchair", "mug_left_of_table", "sunglasses_right_of_chair",
                 "cup_under_table"):
        touch(tmp_path / "controlled_images" / f"{name}.jpeg")
    lines = [
        "[",
        json.dumps({"image_path": "data/controlled_images/beer-bottle_on_armchair.jpeg",
                    "caption_options": _caps("beer bottle", "armchair", "on")}) + ",",            # 2 ok
        json.dumps({"image_path": "data/controlled_images/mug_left_of_table.jpeg",
                    "caption_options": _caps("mug", "table", "to the left of")}) + ",",           # 3 ok
        json.dumps({"image_path": "data/controlled_images/plate_under_table.jpeg",
                    "caption_options": _caps("plate", "table", "under")}) + ",",                  # 4 missing image
        json.dumps({"image_path": 17, "caption_options": _caps("x", "y", "on")}) + ",",          # 5 wrong type
        '{"image_path": "data/controlled_images/cup_on_table.jpeg", "caption_options": ["a" "b"]},',  # 6 malformed
        json.dumps({"image_path": "data/controlled_images/sunglasses_right_of_chair.jpeg",
                    "caption_options": _caps("sunglasses", "chair", "to the right of")}) + ",",   # 7 ok
        json.dumps({"image_path": "data/controlled_images/cup_behind_table.jpeg",
                    "caption_options": _caps("cup", "table", "on")}) + ",",                       # 8 wrong relation
        json.dumps({"image_path": "data/controlled_images/cup_under_table.jpeg",
                    "caption_options": "A cup under a table"}) + ",",                             # 9 wrong type
        json.dumps(["not", "an", "object"]) + ",",                                                # 10 not object
        json.dumps({"image_path": "data/controlled_images/cup_under_table.jpeg",
                    "caption_options": _caps("cup", "table", "under"), "boxes": [1, 2]}),         # 11 boxes type
        "]",
    ]
    path = tmp_path / "controlled_images_dataset.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_controlled_a_items_and_problems(tmp_path):
    path = _controlled_a(tmp_path)
    rep = read_controlled(path)
    assert rep.subset == "Controlled_Images_A"
    assert [it.source for it in rep.items] == [f"{path}:2", f"{path}:3", f"{path}:7"]

    bottle, mug, glasses = rep.items
    assert bottle.question == ("Where is the beer bottle in relation to the armchair? "
                               "Answer with left, right, on or under.")
    assert bottle.options == ("left", "right", "on", "under")
    assert (bottle.gold, bottle.relation, bottle.group) == ("on", "on", "beer-bottle|armchair")
    assert bottle.image_path == tmp_path / "controlled_images" / "beer-bottle_on_armchair.jpeg"
    assert (mug.gold, mug.relation, mug.group) == ("left", "left_of", "mug|table")
    assert glasses.gold == "right"
    assert glasses.question.startswith("Where are the sunglasses in relation to the chair?")
    assert len({it.id for it in rep.items}) == 3

    probs = problems_by_line(rep)
    assert set(probs) == {4, 5, 6, 8, 9, 10, 11}
    assert "image not found" in probs[4] and "plate_under_table.jpeg" in probs[4]
    assert "image_path" in probs[5] and "int" in probs[5]
    assert "malformed JSON" in probs[6]
    assert "'behind'" in probs[8]
    assert "caption_options" in probs[9]
    assert "not an object" in probs[10]
    assert "boxes" in probs[11]
    assert all(p.file == str(path) for p in rep.problems)
    assert str(rep.problems[0]).startswith(f"{path}:4: ")
    assert all(it.kind is None and it.familiar is None for it in rep.items)   # WhatsUp: no such fields


def test_controlled_image_root_elsewhere(tmp_path):
    ann = tmp_path / "ann" / "a.json"
    ann.parent.mkdir()
    touch(tmp_path / "imgs" / "controlled_images" / "mug_on_table.jpeg")
    ann.write_text(dumps_lines([{"image_path": "data/controlled_images/mug_on_table.jpeg",
                                 "caption_options": _caps("mug", "table", "on")}]))
    assert len(read_controlled(ann).items) == 0  # not under the annotation folder
    rep = read_controlled(ann, image_root=tmp_path / "imgs")
    assert rep.ok and rep.items[0].image_path == tmp_path / "imgs" / "controlled_images" / "mug_on_table.jpeg"


def test_controlled_b_relations_and_detection(tmp_path):
    names = ["bowl_in-front_of_cup", "bowl_behind_cup", "bowl_left_of_cup", "bowl_right_of_cup"]
    for n in names:
        touch(tmp_path / "controlled_clevr" / f"{n}.jpeg")
    recs = [{"image_path": f"data/controlled_clevr/{n}.jpeg", "caption_options": ["c1", "c2", "c3", "c4"]}
            for n in names]
    generic = tmp_path / "whatever.json"
    generic.write_text(dumps_lines(recs))
    for path in (generic,):
        rep = load_dataset(path)
        assert rep.subset == "Controlled_Images_B" and rep.ok
        assert [it.gold for it in rep.items] == ["front", "behind", "left", "right"]
        assert rep.items[0].question == ("Where is the bowl in relation to the cup? "
                                         "Answer with left, right, front or behind.")
        assert {it.group for it in rep.items} == {"bowl|cup"}
    # An A relation in a B file is a problem.
    bad = tmp_path / "controlled_clevr_dataset.json"
    touch(tmp_path / "controlled_clevr" / "bowl_on_cup.jpeg")
    bad.write_text(dumps_lines(recs[:1] + [{"image_path": "bowl_on_cup.jpeg", "caption_options": ["x"]}]))
    rep = read_controlled(bad)
    assert rep.subset == "Controlled_Images_B"
    assert len(rep.items) == 1 and list(problems_by_line(rep)) == [3]


def test_controlled_kind_and_familiar_types(tmp_path):
    """A wrong type in ``kind`` or ``familiar`` is a problem; the item is kept without the field."""
    names = ["red-cup_on_blue-table", "red-cup_under_blue-table", "red-cup_left_of_blue-table",
             "red-circle_right_of_blue-square", "red-circle_on_blue-square"]
    for n in names:
        touch(tmp_path / "images" / f"{n}.png")
    caps = _caps("red cup", "blue table", "on")
    recs = [
        {"image_path": f"images/{names[0]}.png", "caption_options": caps, "kind": "thing", "familiar": True},   # 2 ok
        {"image_path": f"images/{names[1]}.png", "caption_options": caps, "kind": "thing", "familiar": "no"},   # 3
        {"image_path": f"images/{names[2]}.png", "caption_options": caps, "kind": 7, "familiar": False},        # 4
        {"image_path": f"images/{names[3]}.png", "caption_options": caps, "kind": "shape", "familiar": None},   # 5 ok
        {"image_path": f"images/{names[4]}.png", "caption_options": caps, "familiar": 1},                       # 6
    ]
    path = tmp_path / "controlled_synthetic.json"
    path.write_text(dumps_lines(recs))
    rep = read_controlled(path)
    assert rep.subset == "Controlled_Synthetic" and len(rep.items) == 5
    assert [(it.kind, it.familiar) for it in rep.items] == [
        ("thing", True), ("thing", None), (None, False), ("shape", None), (None, None)]
    probs = problems_by_line(rep)
    assert set(probs) == {3, 4, 6}
    assert "'familiar'" in probs[3] and "str" in probs[3] and "kept without it" in probs[3]
    assert "'kind'" in probs[4] and "int" in probs[4] and "kept without it" in probs[4]
    assert "'familiar'" in probs[6] and "int" in probs[6]


def test_parse_controlled_name():
    assert parse_controlled_name("data/controlled_images/beer-bottle_left_of_armchair.jpeg") == (
        "beer-bottle", "left_of", "armchair")
    assert parse_controlled_name("x/bowl_in-front_of_cup.jpeg") == ("bowl", "in-front_of", "cup")
    assert parse_controlled_name("mug.jpeg") is None


# ------------------------------------------------------------------- JSON scanning


def test_scan_recovers_in_pretty_printed_file():
    text = json.dumps([{"a": 1}, {"a": 2}, {"a": 3}], indent=2)
    broken = text.replace('"a": 2', '"a": 2,,')
    out = list(scan_json_list(broken))
    recs = [r for r in out if isinstance(r, ScanRecord)]
    errs = [r for r in out if isinstance(r, ScanError)]
    assert [r.value for r in recs] == [{"a": 1}, {"a": 3}]
    assert [r.index for r in recs] == [0, 2]
    assert recs[1].line == text.splitlines().index("  {", 5) + 1
    assert len(errs) == 1 and errs[0].line == 6


def test_scan_truncated_and_not_a_list():
    out = list(scan_json_list('[\n{"a": 1},\n{"a": 2'))
    assert isinstance(out[0], ScanRecord) and out[0].line == 2
    assert isinstance(out[-1], ScanError) and out[-1].line == 3
    out = list(scan_json_list('{"a": 1}'))
    assert len(out) == 1 and isinstance(out[0], ScanError) and "not a JSON list" in out[0].message
    out = list(scan_json_list(""))
    assert isinstance(out[0], ScanError)


# ----------------------------------------------------------------- COCO / VG QA


def test_coco_two_obj(tmp_path):
    for i in (397133, 37777, 5, 87038):
        touch(tmp_path / "val2017" / f"{i:012d}.jpg")
    lines = [
        "[",
        json.dumps([397133, "A photo of a dog to the left of a person", "A photo of a dog to the right of a person"]) + ",",  # 2
        json.dumps([37777, "A photo of an oven above a refrigerator", "A photo of an oven below a refrigerator"]) + ",",  # 3
        json.dumps([5, "A photo of a cat near a dog", "A photo of a cat far from a dog"]) + ",",  # 4 no relation
        json.dumps(["x", 5, "foil"]) + ",",  # 5 wrong type
        '[12, "A photo of a cup to the left of a bowl", "foil",',  # 6 malformed
        json.dumps([999, "A photo of a car to the right of a bus", "A photo of a car to the left of a bus"]) + ",",  # 7 no image
        json.dumps([87038, "A photo of a potted plant below a TV", "A photo of a potted plant above a TV"]) + ",",  # 8
        json.dumps([87038, "only two"]),  # 9 too short
        "]",
    ]
    path = tmp_path / "coco_qa_two_obj.json"
    path.write_text("\n".join(lines) + "\n")
    rep = read_qa(path)
    assert rep.subset == "COCO_QA_two_obj"
    assert [(it.gold, it.source) for it in rep.items] == [
        ("left", f"{path}:2"), ("above", f"{path}:3"), ("below", f"{path}:8")]
    assert rep.items[0].question == ("Where is the dog in relation to the person? "
                                     "Answer with left, right, above or below.")
    assert rep.items[2].question.startswith("Where is the potted plant in relation to the tv?")
    assert rep.items[0].image_path == tmp_path / "val2017" / "000000397133.jpg"
    assert rep.items[0].options == ("left", "right", "above", "below")
    assert all(it.group is None for it in rep.items)
    probs = problems_by_line(rep)
    assert set(probs) == {4, 5, 6, 7, 9}
    assert "no relation" in probs[4]
    assert "captions must be strings" in probs[5]
    assert "malformed" in probs[6]
    assert "image not found" in probs[7] and "000000000999.jpg" in probs[7]
    assert "length 2" in probs[9]


def test_coco_one_obj_and_vg(tmp_path):
    touch(tmp_path / "val2017" / "000000000001.jpg")
    touch(tmp_path / "vg_images" / "2345.jpg")
    one = tmp_path / "coco_qa_one_obj.json"
    one.write_text(dumps_lines([
        [1, "A photo of a dining table on the bottom", "A photo of a dining table on the top"],
        [1, "A photo of a dog on the left", "A photo of a dog on the right"],
        [1, "A photo of a dog in front", "A photo of a dog behind"],  # front is not a COCO one-obj option
    ]))
    rep = load_dataset(one)
    assert rep.subset == "COCO_QA_one_obj"
    assert [it.gold for it in rep.items] == ["bottom", "left"]
    assert rep.items[0].question == "Where is the dining table in the photo? Answer with left, right, top or bottom."
    assert list(problems_by_line(rep)) == [4]

    vg = tmp_path / "vg_qa_two_obj.json"
    vg.write_text(dumps_lines([
        [2345, "A photo of a man in front of a tree", "A photo of a man behind a tree"],
        [2345, "A photo of a dog on top of a toilet", "A photo of a dog below a toilet"],
        ["2345", "A photo of a man to the right of a woman", "x"],
    ]))
    rep = load_dataset(vg)
    assert rep.subset == "VG_QA_two_obj" and rep.ok
    assert [it.gold for it in rep.items] == ["front", "above", "right"]
    assert rep.items[0].image_path == tmp_path / "vg_images" / "2345.jpg"
    assert rep.items[0].question.endswith("Answer with left, right, front, behind, above or below.")


def test_qa_subset_detected_from_content(tmp_path):
    touch(tmp_path / "000000000007.jpg")
    p = tmp_path / "mine.json"
    p.write_text(dumps_lines([[7, "A photo of a cup to the right of a bowl", "x"]]))
    assert load_dataset(p).subset == "COCO_QA_two_obj"
    p.write_text(dumps_lines([[7, "A photo of a cup on the right", "x"]]))
    assert load_dataset(p).subset == "COCO_QA_one_obj"


# --------------------------------------------------------------------------- VSR


def test_vsr_reader(tmp_path):
    touch(tmp_path / "train2017" / "000000085637.jpg")
    touch(tmp_path / "000000000003.jpg")
    lines = [
        json.dumps({"image": "000000085637.jpg",
                    "image_link": "http://images.cocodataset.org/train2017/000000085637.jpg",
                    "caption": "The cat is on the bed.", "label": 1, "relation": "on"}),  # 1
        "",  # 2 blank
        '{"image": "000000000003.jpg", "caption": "broken", ',  # 3 bad line
        json.dumps({"image": "missing.jpg", "caption": "The dog is left of the car.", "label": 0}),  # 4
        json.dumps({"image": "000000000003.jpg", "caption": "The dog is left of the car.", "label": "yes"}),  # 5
        json.dumps({"image": "000000000003.jpg", "caption": "The car is behind the dog.", "label": 0,
                    "relation": "behind"}),  # 6 ok
        json.dumps([1, 2]),  # 7
        json.dumps({"image": "000000000003.jpg", "caption": 5, "label": 1}),  # 8
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rep = read_vsr(path)
    assert rep.subset == "VSR"
    assert [(it.gold, it.source) for it in rep.items] == [("yes", f"{path}:1"), ("no", f"{path}:6")]
    cat = rep.items[0]
    assert cat.options == ("yes", "no") and cat.relation == "on"
    assert cat.image_path == tmp_path / "train2017" / "000000085637.jpg"
    assert cat.question == ("Determine whether the description about the spatial relationship is correct "
                            "or not. Answer with yes or no: The cat is on the bed.")
    probs = problems_by_line(rep)
    assert set(probs) == {3, 4, 5, 7, 8}
    assert "malformed JSON" in probs[3]
    assert "image not found" in probs[4]
    assert "label" in probs[5]
    assert "not a JSON object" in probs[7]
    assert "caption" in probs[8]
    assert load_dataset(path).subset == "VSR"


# ------------------------------------------------------------------ load_dataset


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_dataset(tmp_path / "nope.json")
    with pytest.raises(DatasetNotFoundError):
        read_controlled(tmp_path / "nope.json")
    with pytest.raises(DatasetNotFoundError):
        find_datasets(tmp_path / "nofolder")
    assert issubclass(DatasetNotFoundError, DatasetError) and issubclass(UnknownFormatError, DatasetError)
    with pytest.raises(UnknownFormatError):
        load_dataset(tmp_path)  # empty folder
    weird = tmp_path / "weird.json"
    weird.write_text('{"a": 1}')
    with pytest.raises(UnknownFormatError):
        load_dataset(weird)
    # A known file name with a non-list body: reported, not raised.
    bad = tmp_path / "controlled_images_dataset.json"
    bad.write_text('{"a": 1}')
    rep = load_dataset(bad)
    assert rep.items == [] and rep.problems[0].line == 1 and "not a JSON list" in rep.problems[0].message


def test_load_dataset_folder(tmp_path):
    path = _controlled_a(tmp_path)
    rep = load_dataset(tmp_path)
    assert rep.subset == "Controlled_Images_A" and len(rep.items) == 3 and rep.path == path
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(UnknownFormatError, match="several"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, subset="Controlled_Images_A").subset == "Controlled_Images_A"
    assert load_dataset(tmp_path, subset="VSR").items == []
    assert set(find_datasets(tmp_path)) == {"Controlled_Images_A", "VSR"}


def test_single_line_file_names_the_record(tmp_path):
    """Upstream files are often one line: problems then say which record."""
    touch(tmp_path / "controlled_images" / "mug_on_table.jpeg")
    recs = [{"image_path": "data/controlled_images/mug_on_table.jpeg", "caption_options": ["a"]},
            {"image_path": "data/controlled_images/mug_under_table.jpeg", "caption_options": ["a"]},
            {"image_path": None, "caption_options": ["a"]}]
    path = tmp_path / "controlled_images_dataset.json"
    path.write_text(json.dumps(recs))
    rep = read_controlled(path)
    assert len(rep.items) == 1 and rep.items[0].id == "Controlled_Images_A/0"
    assert [(p.line, p.message.split(":")[0]) for p in rep.problems] == [(1, "record 1"), (1, "record 2")]
    assert "null" in rep.problems[1].message


def test_pretty_printed_file_lines(tmp_path):
    touch(tmp_path / "val2017" / "000000000001.jpg")
    recs = [[1, "A photo of a cup to the left of a bowl", "x"], [1, "A photo of a cup beside a bowl", "x"]]
    path = tmp_path / "coco_qa_two_obj.json"
    text = json.dumps(recs, indent=2)
    path.write_text(text)
    rep = read_qa(path)
    assert rep.items[0].source == f"{path}:2"
    second = [k for k, ln in enumerate(text.splitlines(), 1) if ln == "  ["][1]
    assert [p.line for p in rep.problems] == [second]
