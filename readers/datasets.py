"""Readers for WhatsUp (Controlled_Images_A/B, COCO_QA, VG_QA), VSR and the synthetic
Controlled set, from local files.

No reader raises for one bad record: it adds a :class:`~readers.items.Problem`
(file, line, message) to the :class:`~readers.items.LoadReport` and goes on.  A
missing file or folder raises :class:`~readers.errors.DatasetNotFoundError`; a
file or folder that is no known format raises
:class:`~readers.errors.UnknownFormatError`.  A record whose image file is missing
is a problem (the record is skipped), not a crash.

Image paths.  ``image_root`` defaults to the annotation file's folder.  A path from a
record is looked up, first hit wins, as: ``image_root/<path>``, ``image_root/<path
without a leading "data/">``, ``image_root/<sub>/<file name>`` for the subset's usual
image folders (``controlled_images``, ``controlled_clevr``, ``val2017``,
``vg_images``, ``train2017`` ...), ``image_root/<file name>``, then the same under the
annotation file's folder.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Optional

from . import prompts as P
from .captions import parse_caption
from .errors import DatasetNotFoundError, UnknownFormatError
from .items import Item, LoadReport
from .dataset_files import add_item, missing_message, read_text, resolve_image, scan_records, type_name
from .jsonscan import ScanRecord, scan_json_list, scan_jsonl

#: Upstream annotation file names -> subset.
KNOWN_FILES: dict[str, str] = {
    "controlled_images_dataset.json": P.CONTROLLED_A,
    "controlled_clevr_dataset.json": P.CONTROLLED_B,
    "controlled_synthetic.json": P.CONTROLLED_SYNTHETIC,
    "coco_qa_one_obj.json": P.COCO_ONE,
    "coco_qa_two_obj.json": P.COCO_TWO,
    "vg_qa_one_obj.json": P.VG_ONE,
    "vg_qa_two_obj.json": P.VG_TWO,
}

# ---------------------------------------------------------------- Controlled images

def parse_controlled_name(image_path: str) -> Optional[tuple[str, str, str]]:
    """``".../beer-bottle_left_of_armchair.jpeg"`` -> ``("beer-bottle", "left_of", "armchair")``.

    Same split as whatsup_vlms: object = first ``_`` field, reference = last field
    without extension, relation = the fields between.  ``None`` if fewer than three
    fields."""
    name = PurePosixPath(image_path.replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    parts = stem.split("_")
    if len(parts) < 3 or not parts[0] or not parts[-1]:
        return None
    return parts[0], "_".join(parts[1:-1]), parts[-1]


def _detect_controlled_subset(path: Path, records: list[ScanRecord]) -> str:
    if path.name in KNOWN_FILES and KNOWN_FILES[path.name] in P.CONTROLLED_SUBSETS:
        return KNOWN_FILES[path.name]
    lname = path.name.lower()
    if "synthetic" in lname:
        return P.CONTROLLED_SYNTHETIC
    if "clevr" in lname or lname.endswith(("_b.json", "-b.json")):
        return P.CONTROLLED_B
    for r in records:
        v = r.value
        if isinstance(v, dict) and isinstance(v.get("image_path"), str):
            if "blank_image_path" in v or "boxes" in v:
                return P.CONTROLLED_SYNTHETIC
            parsed = parse_controlled_name(v["image_path"])
            if parsed and parsed[1] in ("in-front_of", "behind"):
                return P.CONTROLLED_B
    return P.CONTROLLED_A


def read_controlled(path: str | Path, image_root: str | Path | None = None, subset: str | None = None) -> LoadReport:
    """Read a Controlled_Images JSON list ``[{"image_path", "caption_options", ...}]``.

    The relation and both object names come from the file name
    ``<obj>_<rel>_<ref>.<ext>`` (``-`` in names reads as a space); the gold word from
    the relation (``left_of``->left, ``in-front_of``->front, ...).  Extra keys are
    accepted; ``boxes`` (an object), ``blank_image_path`` (a string), ``kind`` (a string)
    and ``familiar`` (true, false or null) are used.
    ``subset`` is detected from the file name or the relations when not given.
    """
    path = Path(path)
    report = LoadReport(path=path)
    records = list(scan_records(report, path, scan_json_list))
    subset = subset or _detect_controlled_subset(path, records)
    if subset not in P.CONTROLLED_SUBSETS:
        raise UnknownFormatError(f"{subset!r} is not a Controlled subset ({', '.join(P.CONTROLLED_SUBSETS)})")
    report.subset = subset
    spec = P.SUBSETS[subset]
    assert spec.relations is not None
    ann_dir = path.parent
    root = Path(image_root) if image_root is not None else ann_dir

    for rec in records:
        v, line = rec.value, rec.line

        def bad(msg: str) -> None:
            report.add_problem(path, line, f"record {rec.index}: {msg}")

        where = f"{path}:{line}"
        if not isinstance(v, dict):
            bad(f"record is not an object (got {type_name(v)})")
            continue
        raw = v.get("image_path")
        if not isinstance(raw, str) or not raw.strip():
            bad(f"field 'image_path' must be a non-empty string (got {type_name(raw)})")
            continue
        caps = v.get("caption_options")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            bad("field 'caption_options' must be a non-empty list of strings")
            continue
        boxes = v.get("boxes")
        if boxes is not None and not isinstance(boxes, dict):
            bad(f"field 'boxes' must be an object (got {type_name(boxes)})")
            continue
        parsed = parse_controlled_name(raw)
        if parsed is None:
            bad(f"image file name {raw!r} is not <obj>_<relation>_<ref>.<ext>")
            continue
        obj, rel, ref = parsed
        if rel not in spec.relations:
            bad(f"relation {rel!r} in file name is not one of {sorted(spec.relations)} for {subset}")
            continue
        img, tried = resolve_image(raw, subset, root, ann_dir)
        if img is None:
            bad(missing_message("image", raw, tried))
            continue
        blank = None
        raw_blank = v.get("blank_image_path")
        if raw_blank is not None:
            if not isinstance(raw_blank, str):
                bad(f"field 'blank_image_path' must be a string (got {type_name(raw_blank)}); item kept without it")
            else:
                blank, tried = resolve_image(raw_blank, subset, root, ann_dir)
                if blank is None:
                    bad(missing_message("blank image", raw_blank, tried) + "; item kept without it")
        kind = v.get("kind")
        if kind is not None and not isinstance(kind, str):
            bad(f"field 'kind' must be a string (got {type_name(kind)}); item kept without it")
            kind = None
        familiar = v.get("familiar")
        if familiar is not None and not isinstance(familiar, bool):
            bad(f"field 'familiar' must be true, false or null (got {type_name(familiar)}); item kept without it")
            familiar = None
        obj_w, ref_w = obj.replace("-", " "), ref.replace("-", " ")
        add_item(report, path, line, lambda: Item(
            id=f"{subset}/{rec.index}",
            image_path=img,
            question=P.two_object_question(obj_w, ref_w, spec),
            options=spec.options,
            gold=spec.relations[rel],
            subset=subset,
            group=f"{obj}|{ref}",
            relation=rel,
            boxes=boxes,
            source=where,
            blank_image_path=blank,
            kind=kind,
            familiar=familiar,
        ))
    report.problems.sort(key=lambda p: p.line)
    return report


# ----------------------------------------------------------------- COCO_QA / VG_QA

def _detect_qa_subset(path: Path, records: list[ScanRecord]) -> str:
    if path.name in KNOWN_FILES and KNOWN_FILES[path.name] not in P.CONTROLLED_SUBSETS:
        return KNOWN_FILES[path.name]
    lname = path.name.lower()
    source = "VG" if re.search(r"(^|[^a-z])vg", lname) or "gqa" in lname else "COCO"
    if "one" in lname:
        n = "one"
    elif "two" in lname:
        n = "two"
    else:
        n = "one"
        for r in records:
            v = r.value
            if isinstance(v, list) and len(v) >= 2 and isinstance(v[1], str):
                n = "two" if parse_caption(v[1], True) is not None else "one"
                break
    return f"{source}_QA_{n}_obj"


def _qa_image_name(image_id: object, subset: str) -> Optional[str]:
    if isinstance(image_id, bool):
        return None
    if isinstance(image_id, int):
        return f"{image_id:012d}.jpg" if subset.startswith("COCO") else f"{image_id}.jpg"
    if isinstance(image_id, str) and image_id.strip():
        s = image_id.strip()
        if "." in PurePosixPath(s).name:
            return s
        if s.isdigit() and subset.startswith("COCO"):
            return f"{int(s):012d}.jpg"
        return f"{s}.jpg"
    return None


def read_qa(path: str | Path, image_root: str | Path | None = None, subset: str | None = None) -> LoadReport:
    """Read a COCO_QA / VG_QA one- or two-object JSON list of
    ``[image_id, correct_caption, foil_caption]``.

    Gold word and object names are parsed from the correct caption
    (:mod:`readers.captions`).  COCO images are ``val2017/<id:012d>.jpg``, VG images
    ``vg_images/<id>.jpg`` (as in the reference), looked up under ``image_root``.
    """
    path = Path(path)
    report = LoadReport(path=path)
    records = list(scan_records(report, path, scan_json_list))
    subset = subset or _detect_qa_subset(path, records)
    if subset not in (P.COCO_ONE, P.COCO_TWO, P.VG_ONE, P.VG_TWO):
        raise UnknownFormatError(f"{subset!r} is not a COCO_QA / VG_QA subset")
    report.subset = subset
    spec = P.SUBSETS[subset]
    ann_dir = path.parent
    root = Path(image_root) if image_root is not None else ann_dir

    for rec in records:
        v, line = rec.value, rec.line

        def bad(msg: str) -> None:
            report.add_problem(path, line, f"record {rec.index}: {msg}")

        if not isinstance(v, list) or len(v) < 3:
            bad(f"record must be a list [image_id, correct_caption, foil_caption] (got {type_name(v)}{'' if not isinstance(v, list) else ' of length ' + str(len(v))})")
            continue
        image_id, correct, foil = v[0], v[1], v[2]
        if not isinstance(correct, str) or not isinstance(foil, str):
            bad(f"captions must be strings (got {type_name(correct)}, {type_name(foil)})")
            continue
        name = _qa_image_name(image_id, subset)
        if name is None:
            bad(f"image id must be an integer or a non-empty string (got {type_name(image_id)})")
            continue
        parsed = parse_caption(correct, spec.two_object, spec.options)
        if parsed is None:
            bad(f"no relation found in caption {correct!r}")
            continue
        if parsed.gold not in spec.options:
            bad(f"relation {parsed.gold!r} from caption {correct!r} is not one of {spec.options}")
            continue
        img, tried = resolve_image(name, subset, root, ann_dir)
        if img is None:
            bad(missing_message("image", name, tried))
            continue
        if spec.two_object:
            question = P.two_object_question(parsed.obj, parsed.ref or "", spec)
        else:
            question = P.one_object_question(parsed.obj, spec)
        add_item(report, path, line, lambda: Item(
            id=f"{subset}/{rec.index}",
            image_path=img,
            question=question,
            options=spec.options,
            gold=parsed.gold,
            subset=subset,
            group=None,
            relation=parsed.gold,
            boxes=None,
            source=f"{path}:{line}",
        ))
    report.problems.sort(key=lambda p: p.line)
    return report


# --------------------------------------------------------------------------- VSR

def _vsr_label(v: object) -> Optional[int]:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int) and v in (0, 1):
        return v
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false"):
        return 1 if v.strip().lower() in ("1", "true") else 0
    return None


def read_vsr(path: str | Path, image_root: str | Path | None = None) -> LoadReport:
    """Read a VSR JSONL file (``image``, ``image_link``, ``caption``, ``label``,
    ``relation``).  Options ``("yes", "no")``; gold ``yes`` for label 1, ``no`` for 0.

    Question: the reference VSR prompt (:data:`readers.prompts.VSR_QUESTION`),
    ``"Determine whether the description about the spatial relationship is correct or
    not. Answer with yes or no: {caption}"``.  The image is looked up as the path after
    ``.org/`` in ``image_link`` (e.g. ``train2017/000000085637.jpg``, the reference's
    rule), then by ``image`` under ``image_root`` (and ``train2017``/``val2017``).
    """
    path = Path(path)
    report = LoadReport(path=path, subset=P.VSR)
    spec = P.SUBSETS[P.VSR]
    ann_dir = path.parent
    root = Path(image_root) if image_root is not None else ann_dir
    for rec in scan_records(report, path, scan_jsonl):
        v, line = rec.value, rec.line
        if not isinstance(v, dict):
            report.add_problem(path, line, f"line is not a JSON object (got {type_name(v)})")
            continue
        caption = v.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            report.add_problem(path, line, f"field 'caption' must be a non-empty string (got {type_name(caption)})")
            continue
        label = _vsr_label(v.get("label"))
        if label is None:
            report.add_problem(path, line, f"field 'label' must be 0 or 1 (got {v.get('label')!r})")
            continue
        relation = v.get("relation")
        if relation is not None and not isinstance(relation, str):
            report.add_problem(path, line, f"field 'relation' must be a string (got {type_name(relation)})")
            continue
        names: list[str] = []
        link = v.get("image_link")
        if isinstance(link, str):
            m = re.search(r"\.org/(.*)", link)
            if m:
                names.append(m.group(1))
        image = v.get("image")
        if isinstance(image, str) and image.strip():
            names.append(image.strip())
        if not names:
            report.add_problem(path, line, "no usable 'image' or 'image_link' string")
            continue
        img, tried = None, []
        for name in names:
            img, t = resolve_image(name, P.VSR, root, ann_dir)
            tried += t
            if img is not None:
                break
        if img is None:
            report.add_problem(path, line, missing_message("image", names[-1], tried))
            continue
        add_item(report, path, line, lambda: Item(
            id=f"{P.VSR}/{rec.index}",
            image_path=img,
            question=P.vsr_question(caption),
            options=spec.options,
            gold="yes" if label == 1 else "no",
            subset=P.VSR,
            group=None,
            relation=relation,
            boxes=None,
            source=f"{path}:{line}",
        ))
    report.problems.sort(key=lambda p: p.line)
    return report


# ------------------------------------------------------------------ format detection

def find_datasets(folder: str | Path) -> dict[str, Path]:
    """Known annotation files directly in ``folder`` (and in ``folder/data``), by subset.
    JSONL files count as VSR (``test.jsonl`` preferred, then ``val``, ``train``, other)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset folder not found: {folder}")
    found: dict[str, Path] = {}
    for d in (folder, folder / "data"):
        if not d.is_dir():
            continue
        for name, subset in KNOWN_FILES.items():
            if (d / name).is_file() and subset not in found:
                found[subset] = d / name
        if P.VSR not in found:
            jsonl = sorted(d.glob("*.jsonl"))
            order = {"test.jsonl": 0, "val.jsonl": 1, "train.jsonl": 2}
            jsonl.sort(key=lambda p: (order.get(p.name, 3), p.name))
            if jsonl:
                found[P.VSR] = jsonl[0]
    return found


def _detect_file(path: Path) -> str:
    """``"controlled"``, ``"qa"`` or ``"vsr"`` for an annotation file."""
    if path.suffix.lower() == ".jsonl":
        return "vsr"
    if path.name in KNOWN_FILES:
        return "controlled" if KNOWN_FILES[path.name] in P.CONTROLLED_SUBSETS else "qa"
    text = read_text(path)
    for rec in scan_json_list(text):
        if isinstance(rec, ScanRecord):
            if isinstance(rec.value, dict) and "image_path" in rec.value:
                return "controlled"
            if isinstance(rec.value, list):
                return "qa"
            if isinstance(rec.value, dict) and "caption" in rec.value and "label" in rec.value:
                return "vsr-json"
            break
    raise UnknownFormatError(
        f"{path}: not a WhatsUp Controlled / COCO_QA / VG_QA JSON list nor a VSR JSONL file"
    )


def load_dataset(path_or_folder: str | Path, image_root: str | Path | None = None,
                 subset: str | None = None) -> LoadReport:
    """Load one benchmark, detecting its format.

    * a ``.jsonl`` file -> VSR;
    * a ``.json`` file -> Controlled (list of objects with ``image_path``) or QA (list
      of lists); the subset from the upstream file name
      (:data:`KNOWN_FILES`), else from the contents (Controlled B if a relation is
      ``in-front_of``/``behind``, synthetic if records carry ``boxes`` /
      ``blank_image_path``; QA: ``vg`` in the name -> VG, else COCO; one/two object
      from the name or from the first caption);
    * a folder -> the one dataset :func:`find_datasets` finds there, or the one named
      by ``subset`` when there are several.

    ``subset`` overrides detection.  Raises :class:`DatasetNotFoundError` if nothing is
    at the path, :class:`UnknownFormatError` if the format is not recognised.
    """
    p = Path(path_or_folder)
    if not p.exists():
        raise DatasetNotFoundError(f"dataset path not found: {p}")
    if p.is_dir():
        found = find_datasets(p)
        if subset is not None:
            if subset not in found:
                raise UnknownFormatError(f"{p}: no {subset} annotation file here (found: {sorted(found) or 'none'})")
            return load_dataset(found[subset], image_root=image_root, subset=subset)
        if len(found) == 1:
            (sub, f), = found.items()
            return load_dataset(f, image_root=image_root, subset=sub)
        if not found:
            raise UnknownFormatError(f"{p}: no known annotation file (expected one of {sorted(KNOWN_FILES)} or *.jsonl)")
        raise UnknownFormatError(f"{p}: several datasets here ({', '.join(sorted(found))}); pass subset=")
    kind = _detect_file(p)
    if kind == "vsr":
        if subset not in (None, P.VSR):
            raise UnknownFormatError(f"{p}: a JSONL file is VSR, not {subset}")
        return read_vsr(p, image_root)
    if kind == "vsr-json":
        raise UnknownFormatError(f"{p}: VSR records in a JSON list; VSR is read from JSONL (one object per line)")
    if kind == "controlled":
        return read_controlled(p, image_root, subset)
    return read_qa(p, image_root, subset)
