"""A procedural spatial benchmark in the WhatsUp Controlled_Images format.

Two objects drawn with Pillow, no third-party assets, in one of four relations: ``on``,
``under``, ``left_of``, ``right_of``.  The subject A is drawn smaller than the reference B
(as a mug beside a table).  Two kinds of object pair:

* shapes: coloured shapes ("red circle", "blue square", ...), names without a prior;
* things: everyday objects whose names carry a language prior ("red cup", "blue table";
  see :mod:`scenes.things`), each ordered pair of :data:`things.PRIOR_PAIRS` in both
  orders.  As in WhatsUp, every pair appears in all four relations, so "a cup on a
  table" (the familiar relation) stands beside "a cup under a table" and "a table on
  a cup" (unfamiliar ones).

``--objects mixed`` (the default) draws half of the pairs of each kind (shapes get the
odd one), ``shapes`` or ``things`` only one kind.

* ``on``: A rests on B -- A's bottom edge touches B's top edge, A horizontally
  within B's span.
* ``under``: A is below B with a small gap, horizontally within B's span.
* ``left_of`` / ``right_of``: A beside B with a clear horizontal gap, their
  vertical spans overlapping.

Balance: ``n`` is rounded to the nearest multiple of 4 (halves up, at least 4, at most
``4 * 900``); ``n / 4`` distinct ordered object pairs (A, B) -- different colour and
different shape, so names are unambiguous -- are drawn by seed, and each pair appears
in all four relations, so each relation has exactly ``n / 4`` items.  Items are
shuffled (by seed) in the JSON.

Output (``OUT``)::

    images/<A>_<rel>_<B>.png        e.g. red-circle_left_of_blue-square.png
    blank/<A>_<rel>_<B>.png         same size, filled with the image's mean colour
    controlled_synthetic.json       [{"image_path", "caption_options", "boxes",
                                      "blank_image_path", "objects"}, ...]

``caption_options`` is ``[correct, foil, foil, foil]`` as upstream ("A red circle on a
blue square", "... under ...", "... to the left of ...", "... to the right of ...").
``boxes`` is ``{"A": [x0, y0, x1, y1], "B": [...]}`` in output pixels, ``x1``/``y1``
exclusive (pixel edges), tight around each shape.  ``objects`` is
``{"A": "red circle", "B": "blue square"}``.  ``kind`` is ``"shape"`` or ``"thing"``;
``prior_relation`` is the relation a language prior expects for the pair (``"on"`` for
a cup and a table, ``"under"`` for a table and a cup; ``null`` for shapes) and
``familiar`` whether the item's relation is that one (``null`` for shapes).  Paths are
relative to ``OUT``.

Deterministic: the same ``(n, seed, size)`` gives byte-identical JSON and PNGs (stdlib
``random.Random(seed)``, no timestamps in the PNGs).  Shapes are drawn at 2x and
downsampled for smooth edges.

Run: ``python -m scenes OUT --n 200 --seed 0 --size 336 [--objects mixed]`` (``just synthetic``).

Reading kinds (:mod:`scenes.reading_scenes`: ``READING_KINDS``, ``reading_set``): scenes and questions that need the
object names read -- the standard question and the same scenes with the names swapped
(``reversed``), objects of alike size, pairs differing only in colour or only in shape, a third
object standing apart as a distractor, and the question forms ``free`` (no answer-format
suffix), ``yes_no`` and ``what`` ("What is under the blue box?").  ``python -m scenes OUT --reading KIND`` writes one
of them (``reading.json``); :mod:`evaluation.reading` evaluates a bundle on all of them.
Seeds 0..999 are for evaluation; the ``spatial`` model was trained on scenes drawn
with seeds 1000 and above (``train/``), so any seed below 1000 is held out.
"""
from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw

from .things import ASPECT, PRIOR_PAIRS, THINGS, draw_thing, prior_relation

JSON_NAME = "controlled_synthetic.json"
RELATIONS = ("on", "under", "left_of", "right_of")
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 94, 210),
    "yellow": (240, 200, 20),
    "purple": (148, 70, 189),
    "orange": (255, 127, 14),
}
BACKGROUNDS = ((245, 245, 245), (236, 234, 226), (226, 234, 240), (240, 232, 236))
OUTLINE = (40, 40, 40)
OBJECT_KINDS = ("mixed", "shapes", "things")
SUPERSAMPLING = 2  # the drawing's supersampling factor
_SS = SUPERSAMPLING
PROGRESS_FROM = 1000  # show progress for n >= this
PNG_COMPRESS = 3  # zlib level: fast, still small


def round_n(n: int) -> int:
    """``n`` rounded to the nearest multiple of 4 (halves up), at least 4."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return max(4, (int(n) + 2) // 4 * 4)


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def slug(self) -> str:
        return f"{self.colour}-{self.shape}"

    @property
    def is_thing(self) -> bool:
        return self.shape in THINGS

    @property
    def aspect(self) -> float:
        """Width / height of the object's box."""
        return ASPECT.get(self.shape, 1.0)


def all_pairs() -> list[tuple[Obj, Obj]]:
    """Ordered pairs of coloured shapes (different colour and shape)."""
    objs = [Obj(c, s) for c in COLOURS for s in SHAPES]
    return [(a, b) for a in objs for b in objs if a.colour != b.colour and a.shape != b.shape]


def thing_pairs() -> list[tuple[Obj, Obj]]:
    """Ordered pairs of everyday objects with a prior (both orders), different colours."""
    kinds = list(PRIOR_PAIRS) + [(y, x) for x, y in PRIOR_PAIRS]
    return [(Obj(ca, x), Obj(cb, y)) for x, y in kinds for ca in COLOURS for cb in COLOURS if ca != cb]


def max_n(objects: str = "mixed") -> int:
    shapes, things = 4 * len(all_pairs()), 4 * len(thing_pairs())
    return {"shapes": shapes, "things": things, "mixed": 2 * min(shapes, things)}[objects]


MAX_N = max_n("mixed")


def captions(a: Obj, b: Obj, relation: str) -> list[str]:
    """Upstream-style caption options, the correct one first."""
    phrase = {"on": "on", "under": "under", "left_of": "to the left of", "right_of": "to the right of"}
    first = [relation] + [r for r in RELATIONS if r != relation]
    art = lambda o: "an" if o.name[0] in "aeiou" else "a"  # noqa: E731
    return [f"{art(a).capitalize()} {a.name} {phrase[r]} {art(b)} {b.name}" for r in first]


# ------------------------------------------------------------------------- layout

Box = tuple[int, int, int, int]


def layout(relation: str, size: int, rng: random.Random, aspect_a: float = 1.0,
           aspect_b: float = 1.0, sides: tuple[tuple[float, float], tuple[float, float]] | None = None
           ) -> tuple[Box, Box]:
    """Boxes (A, B) for a relation on a ``size`` x ``size`` canvas.

    ``aspect_*`` is an object's width / height; sizes are drawn as the side of a square
    of the same area, then shrunk together (with the gap) if the pair would not fit.
    ``sides`` overrides the ranges of the two sides as fractions of ``size`` (default: A
    0.15-0.21, B 0.26-0.33, so A is the smaller).
    """
    s = size
    (la, ha_), (lb, hb_) = sides or ((0.15, 0.21), (0.26, 0.33))
    sa = rng.randint(round(la * s), round(ha_ * s))
    sb = rng.randint(round(lb * s), round(hb_ * s))
    margin = max(2, round(0.04 * s))
    if relation in ("on", "under"):
        gap = 0 if relation == "on" else rng.randint(max(2, round(0.02 * s)), max(3, round(0.06 * s)))
    elif relation in ("left_of", "right_of"):
        gap = rng.randint(round(0.06 * s), round(0.18 * s))
    else:
        raise ValueError(f"unknown relation {relation!r}")
    dims = lambda side, ar: (max(2, round(side * ar ** 0.5)), max(2, round(side / ar ** 0.5)))  # noqa: E731
    (wa, ha), (wb, hb) = dims(sa, aspect_a), dims(sb, aspect_b)
    vertical = relation in ("on", "under")
    need = max(wa, wb) if vertical else wa + gap + wb        # the pair's extent across
    need_y = ha + gap + hb if vertical else max(ha, hb)
    fit = min(1.0, (s - 2 * margin) / need, (s - 2 * margin) / need_y)
    if fit < 1.0:
        (wa, ha), (wb, hb) = dims(sa * fit, aspect_a), dims(sb * fit, aspect_b)
        gap = int(gap * fit)
    if vertical:
        ax = rng.randint(0, max(0, wb - wa))  # A within B's horizontal span
        if relation == "on":
            a = (ax, 0, ax + wa, ha)
            b = (0, ha + gap, wb, ha + gap + hb)
        else:
            b = (0, 0, wb, hb)
            a = (ax, hb + gap, ax + wa, hb + gap + ha)
    else:
        ay = rng.randint(0, max(0, hb - ha))  # A's vertical span inside B's
        if relation == "left_of":
            a = (0, ay, wa, ay + ha)
            b = (wa + gap, 0, wa + gap + wb, hb)
        else:
            b = (0, 0, wb, hb)
            a = (wb + gap, ay, wb + gap + wa, ay + ha)
    if wa > wb and vertical:      # A wider than B (a wide thing on a narrow one): centre it
        shift_a = (wb - wa) // 2
        a = (a[0] + shift_a, a[1], a[2] + shift_a, a[3])
        b, a = _normalise(b, a)
    w = max(a[2], b[2])
    h = max(a[3], b[3])
    ox = rng.randint(margin, max(margin, s - margin - w))
    oy = rng.randint(margin, max(margin, s - margin - h))
    shift = lambda r: (r[0] + ox, r[1] + oy, r[2] + ox, r[3] + oy)  # noqa: E731
    return shift(a), shift(b)


def _normalise(b: Box, a: Box) -> tuple[Box, Box]:
    """Shift both boxes so the smallest x and y are 0."""
    dx, dy = min(a[0], b[0]), min(a[1], b[1])
    move = lambda r: (r[0] - dx, r[1] - dy, r[2] - dx, r[3] - dy)  # noqa: E731
    return move(b), move(a)


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Polygon vertices normalised to fill the unit square exactly (tight box)."""
    if shape == "triangle":
        pts = [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    elif shape == "diamond":
        pts = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    elif shape == "square":
        pts = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    elif shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.42
            t = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(t), r * math.sin(t)))
    elif shape == "hexagon":
        pts = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return [((x - x0) / w, (y - y0) / h) for x, y in pts]


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, box: Box, k: int = _SS) -> None:
    """Draw ``obj`` filling ``box`` (output pixels, exclusive end) on a k-times canvas."""
    x0, y0, x1, y1 = (v * k for v in box)
    x1, y1 = x1 - 1, y1 - 1  # PIL includes the end pixel
    fill, width = COLOURS[obj.colour], max(1, k)
    if obj.is_thing:
        draw_thing(draw, obj.shape, (x0, y0, x1, y1), fill, OUTLINE, width)
        return
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill, outline=OUTLINE, width=width)
        return
    pts = [(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in _unit_polygon(obj.shape)]
    draw.polygon(pts, fill=fill, outline=OUTLINE, width=width)


def render(a: Obj, b: Obj, boxes: tuple[Box, Box], size: int, background: tuple[int, int, int]) -> Image.Image:
    big = Image.new("RGB", (size * _SS, size * _SS), background)
    d = ImageDraw.Draw(big)
    draw_object(d, b, boxes[1])
    draw_object(d, a, boxes[0])
    return big.reduce(_SS)  # box-filter downsample: fast, deterministic


def mean_colour_image(img: Image.Image) -> Image.Image:
    """Same size as ``img``, filled with its per-channel mean colour (rounded)."""
    rgb = img.convert("RGB")
    n = rgb.width * rgb.height
    hist = rgb.histogram()
    mean = tuple(
        int(round(sum(i * c for i, c in enumerate(hist[256 * ch: 256 * (ch + 1)])) / n)) for ch in range(3)
    )
    return Image.new("RGB", rgb.size, mean)


# --------------------------------------------------------------------- generation

@dataclass(frozen=True)
class Spec:
    a: Obj
    b: Obj
    relation: str
    boxes: tuple[Box, Box]
    background: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.a.slug}_{self.relation}_{self.b.slug}"


def plan(n: int, seed: int, size: int, objects: str = "mixed") -> list[Spec]:
    """The items, in JSON order, without drawing anything."""
    if objects not in OBJECT_KINDS:
        raise ValueError(f"objects must be one of {', '.join(OBJECT_KINDS)}, got {objects!r}")
    n4 = round_n(n)
    limit = max_n(objects)
    if n4 > limit:
        raise ValueError(f"n={n} needs {n4 // 4} distinct object pairs; at most {limit // 4} exist "
                         f"for --objects {objects} (n <= {limit})")
    if size < 64:
        raise ValueError(f"size must be at least 64, got {size}")
    rng = random.Random(seed)
    groups = n4 // 4
    n_things = {"shapes": 0, "things": groups, "mixed": groups // 2}[objects]
    pairs = rng.sample(all_pairs(), groups - n_things) if groups > n_things else []
    if n_things:
        pairs += rng.sample(thing_pairs(), n_things)
    specs = []
    for a, b in pairs:
        for rel in RELATIONS:
            boxes = layout(rel, size, rng, a.aspect, b.aspect)
            specs.append(Spec(a, b, rel, boxes, BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]))
    rng.shuffle(specs)
    return specs


def record(spec: Spec) -> dict:
    """The JSON record of one item (paths relative to the output folder)."""
    prior = prior_relation(spec.a.shape, spec.b.shape)
    return {
        "image_path": f"images/{spec.name}.png",
        "caption_options": captions(spec.a, spec.b, spec.relation),
        "boxes": {"A": list(spec.boxes[0]), "B": list(spec.boxes[1])},
        "blank_image_path": f"blank/{spec.name}.png",
        "objects": {"A": spec.a.name, "B": spec.b.name},
        "kind": "thing" if spec.a.is_thing else "shape",
        "prior_relation": prior,
        "familiar": None if prior is None else spec.relation == prior,
    }


def _progress(total: int) -> Iterator[None]:
    if total < PROGRESS_FROM:
        for _ in range(total):
            yield
        return
    try:                               # optional: rich (the calibration extra); plain counts without it
        from rich.progress import Progress
    except ImportError:  # pragma: no cover - rich is optional
        for i in range(total):
            if i % 200 == 0:
                print(f"  {i}/{total}", file=sys.stderr)
            yield
        return
    with Progress(transient=True) as p:
        task = p.add_task("drawing", total=total)
        for _ in range(total):
            yield
            p.advance(task)


def generate(out: str | Path, n: int = 200, seed: int = 0, size: int = 336, objects: str = "mixed") -> Path:
    """Write the benchmark under ``out`` and return the JSON path (see module doc)."""
    out = Path(out)
    specs = plan(n, seed, size, objects)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "blank").mkdir(parents=True, exist_ok=True)
    records = []
    for spec, _ in zip(specs, _progress(len(specs))):
        img = render(spec.a, spec.b, spec.boxes, size, spec.background)
        rec = record(spec)
        img.save(out / rec["image_path"], format="PNG", compress_level=PNG_COMPRESS)
        mean_colour_image(img).save(out / rec["blank_image_path"], format="PNG", compress_level=PNG_COMPRESS)
        records.append(rec)
    path = out / JSON_NAME
    # One record per line: readable, and problems point at a record's own line.
    body = ",\n".join(json.dumps(r, ensure_ascii=True) for r in records)
    path.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    return path

