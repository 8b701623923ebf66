"""Reading kinds: scenes and questions that can only be answered by reading the object names.

Either object can be the subject, sizes can be alike, a third object can stand by, a pair can differ
only in colour or only in shape, and the question takes four forms (WhatsUp, free, yes/no, "what").
Drawn with :mod:`scenes.synthetic`'s objects and layout; ``python -m scenes OUT
--reading KIND`` writes one kind (:func:`generate_reading`); :mod:`evaluation.reading` evaluates a
bundle on all of them.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .synthetic import (BACKGROUNDS, COLOURS, PNG_COMPRESS, RELATIONS, SHAPES, SUPERSAMPLING, Box, Obj,
                        draw_object, layout, mean_colour_image, plan)
from .things import PRIOR_PAIRS, THINGS


# Scenes and questions that can only be answered by reading the object names: either object
# can be the subject, sizes can be alike, a third object can stand by, a pair can differ only
# in colour or only in shape, and the question takes four forms.

INVERSE = {"on": "under", "under": "on", "left_of": "right_of", "right_of": "left_of"}
PHRASES = {"on": "on", "under": "under", "left_of": "to the left of", "right_of": "to the right of"}
#: The one-word answer the spatial model gives per relation.
ANSWER_WORDS = {"on": "On", "under": "Under", "left_of": "Left", "right_of": "Right"}
RELATION_OPTIONS = ("left", "right", "on", "under")
SCENE_KINDS = ("standard", "similar", "colour_only", "shape_only", "distractor", "prior")
FORMS = ("whatsup", "free", "yes_no", "what")
#: Evaluation kinds: scene kind x question form (``reversed``: the standard scene, names swapped;
#: ``prior_familiar`` / ``prior_unfamiliar``: a pair of :data:`things.PRIOR_PAIRS` in the relation
#: training showed it in most of the time, and in any other).
READING_KINDS = ("standard", "reversed", "similar", "colour_only", "shape_only", "distractor", "free", "yes_no",
                 "what", "prior_familiar", "prior_unfamiliar")
#: How often a training scene of kind ``prior`` shows its pair in the familiar relation ("cup on table").
PRIOR_SHARE = 0.85
_SIMILAR = ((0.2, 0.27), (0.2, 0.27))


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]        # A, B[, C]; A is drawn last (on top), a distractor C first
    boxes: tuple[Box, ...]
    relation: str                   # A relative to B; a distractor is diagonal to both
    background: tuple[int, int, int]
    kind: str

    def relation_of(self, subject: int, reference: int) -> str:
        if (subject, reference) == (0, 1):
            return self.relation
        if (subject, reference) == (1, 0):
            return INVERSE[self.relation]
        raise ValueError("only A and B stand in a relation")

    def render(self, size: int) -> Image.Image:
        big = Image.new("RGB", (size * SUPERSAMPLING, size * SUPERSAMPLING), self.background)
        d = ImageDraw.Draw(big)
        for obj, box in reversed(list(zip(self.objects, self.boxes))):
            draw_object(d, obj, box)
        return big.reduce(SUPERSAMPLING)


@dataclass(frozen=True)
class Question:
    text: str
    answer: str                     # what the model is trained to say: "Left", "Yes", "Red circle"
    form: str                       # one of FORMS
    subject: int                    # indices into Scene.objects
    reference: int
    asked: str                      # the relation the question names (yes_no, what) or asks for

    def gold(self) -> str:
        """The word strict scoring looks for (``left``, ``yes``, ``red circle``)."""
        return self.answer.lower()


def _objects(family: str) -> list[Obj]:
    return [Obj(c, s) for c in COLOURS for s in (SHAPES if family == "shape" else THINGS)]


def _pair(kind: str, rng: random.Random) -> tuple[Obj, Obj]:
    if kind == "prior":               # (X, Y) of PRIOR_PAIRS, any two colours: "X on Y" is the familiar scene
        x, y = rng.choice(PRIOR_PAIRS)
        cx, cy = rng.sample(list(COLOURS), 2)
        return Obj(cx, x), Obj(cy, y)
    pool = _objects(rng.choice(("shape", "thing")))
    while True:
        a, b = rng.sample(pool, 2)
        same_colour, same_shape = a.colour == b.colour, a.shape == b.shape
        if kind == "colour_only" and same_shape and not same_colour:
            return a, b
        if kind == "shape_only" and same_colour and not same_shape:
            return a, b
        if kind not in ("colour_only", "shape_only") and not same_colour and not same_shape:
            return a, b


def _apart(p: Box, q: Box, gap: int) -> bool:
    """Neither span overlaps: p is diagonal to q (so in none of the four relations)."""
    return (p[2] + gap <= q[0] or q[2] + gap <= p[0]) and (p[3] + gap <= q[1] or q[3] + gap <= p[1])


def draw_scene(kind: str, relation: str, size: int, rng: random.Random) -> Scene:
    """One scene of ``kind`` (SCENE_KINDS) with A ``relation`` B."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    a, b = _pair(kind, rng)
    background = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    sides = None if kind in ("standard", "distractor", "prior") or rng.random() < 0.3 else _SIMILAR
    if kind != "distractor":
        return Scene((a, b), layout(relation, size, rng, a.aspect, b.aspect, sides), relation, background, kind)
    names = {a.name, b.name}
    c = rng.choice([o for o in _objects(rng.choice(("shape", "thing"))) if o.name not in names])
    sub, gap, margin = round(0.78 * size), max(2, round(0.03 * size)), max(2, round(0.04 * size))
    while True:
        pa, pb = layout(relation, sub, rng, a.aspect, b.aspect)
        side = rng.randint(round(0.14 * size), round(0.2 * size))
        w, h = max(2, round(side * c.aspect ** 0.5)), max(2, round(side / c.aspect ** 0.5))
        for _ in range(60):
            ox, oy = rng.randint(0, size - sub), rng.randint(0, size - sub)
            boxes = [(x0 + ox, y0 + oy, x1 + ox, y1 + oy) for x0, y0, x1, y1 in (pa, pb)]
            x, y = rng.randint(margin, size - margin - w), rng.randint(margin, size - margin - h)
            box_c = (x, y, x + w, y + h)
            if all(_apart(box_c, q, gap) for q in boxes):
                return Scene((a, b, c), (*boxes, box_c), relation, background, kind)


def _name(obj: Obj) -> str:
    return obj.name[0].upper() + obj.name[1:]


def ask(scene: Scene, form: str, rng: random.Random, subject: int | None = None, yes: bool | None = None) -> Question:
    """A question of ``form`` (FORMS) about the scene's pair, the subject A or B (random unless given)."""
    s = rng.randrange(2) if subject is None else subject
    r = 1 - s
    obj, ref = scene.objects[s].name, scene.objects[r].name
    truth = scene.relation_of(s, r)
    if form == "whatsup":
        return Question(two_object_question_text(obj, ref), ANSWER_WORDS[truth], form, s, r, truth)
    if form == "free":
        return Question(f"Where is the {obj} in relation to the {ref}?", ANSWER_WORDS[truth], form, s, r, truth)
    if form == "yes_no":
        yes = rng.random() < 0.5 if yes is None else yes
        asked = truth if yes else rng.choice([x for x in RELATIONS if x != truth])
        return Question(f"Is the {obj} {PHRASES[asked]} the {ref}? Answer yes or no.", "Yes" if yes else "No",
                        form, s, r, asked)
    if form == "what":
        return Question(f"What is {PHRASES[truth]} the {ref}?", _name(scene.objects[s]), form, s, r, truth)
    raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")


def two_object_question_text(obj: str, ref: str) -> str:
    """The benchmark's WhatsUp question (``readers.prompts.two_object_question``)."""
    return f"Where is the {obj} in relation to the {ref}? Answer with left, right, on or under."


def score_reading(question: Question, scene: Scene, text: str) -> bool:
    """Strict: exactly one option word (relations, yes/no) or object name (what), the right one."""
    t = " " + " ".join(text.lower().replace(".", " ").replace(",", " ").split()) + " "
    if question.form == "what":
        found = {o.name for o in scene.objects if f" {o.name} " in t}
        return found == {scene.objects[question.subject].name}
    options = ("yes", "no") if question.form == "yes_no" else RELATION_OPTIONS
    found = {o for o in options if f" {o} " in t}
    return found == {question.gold()}


def relation_word_only(text: str) -> bool:
    """The answer is a relation word (at most three words, one option word): not an echo."""
    words = text.lower().replace(".", " ").split()
    return 0 < len(words) <= 3 and sum(w in RELATION_OPTIONS for w in words) == 1


def reading_set(kind: str, n: int, seed: int, size: int = 336) -> list[tuple[Scene, Question]]:
    """``n`` items of an evaluation kind (READING_KINDS), relations (and yes/no) balanced, by seed.

    ``standard`` and ``reversed`` ask about the same scenes (the benchmark's, :func:`plan`): the
    smaller object as the subject, then the bigger one.
    """
    if kind not in READING_KINDS:
        raise ValueError(f"kind must be one of {', '.join(READING_KINDS)}, got {kind!r}")
    if kind in ("standard", "reversed"):
        out = []
        for spec in plan(n, seed, size, "mixed")[:n]:
            scene = Scene((spec.a, spec.b), spec.boxes, spec.relation, spec.background, "standard")
            out.append((scene, ask(scene, "whatsup", random.Random(0), subject=int(kind == "reversed"))))
        return out
    rng = random.Random(f"{kind}:{seed}:{size}")
    out = []
    if kind in ("prior_familiar", "prior_unfamiliar"):
        unfamiliar = [r for r in RELATIONS if r != "on"]
        for i in range(n):
            relation = "on" if kind == "prior_familiar" else unfamiliar[i % 3]
            scene = draw_scene("prior", relation, size, rng)
            out.append((scene, ask(scene, "whatsup", rng, subject=i % 2)))
        return out
    for i in range(n):
        if kind in ("free", "yes_no", "what"):
            scene_kind = SCENE_KINDS[i // 4 % 5]         # the five kinds without a prior
            form = kind
        else:
            scene_kind, form = kind, "whatsup"
        scene = draw_scene(scene_kind, RELATIONS[i % 4], size, rng)
        out.append((scene, ask(scene, form, rng, yes=(i // 2) % 2 == 0 if form == "yes_no" else None)))
    return out


def training_item(seed: int, size: int) -> tuple[Scene, Question]:
    """One training item: a scene of a random kind and a question of a random form.

    A ``prior`` scene shows its pair in the familiar relation (X on Y) ``PRIOR_SHARE`` of the time,
    so the model learns a prior that the ``prior_unfamiliar`` evaluation kind then asks against.
    """
    rng = random.Random(seed)
    kind = rng.choices(SCENE_KINDS, weights=(3, 2, 1.5, 1.5, 3, 1.5))[0]
    if kind == "prior":
        relation = "on" if rng.random() < PRIOR_SHARE else rng.choice([r for r in RELATIONS if r != "on"])
    else:
        relation = rng.choice(RELATIONS)
    scene = draw_scene(kind, relation, size, rng)
    form = rng.choices(FORMS, weights=(4, 2, 3, 1))[0]
    return scene, ask(scene, form, rng)


def generate_reading(out: str | Path, kind: str, n: int = 100, seed: int = 0, size: int = 336) -> Path:
    """Write ``n`` items of a reading kind (READING_KINDS) under ``out``; returns ``reading.json``'s path.

    Each record: ``image_path``, ``blank_image_path``, ``question``, ``answer`` (the model's trained
    answer: ``Left``, ``Yes``, ``Red circle``), ``form``, ``kind``, ``objects`` (names, A first),
    ``subject`` / ``reference`` (indices into ``objects``), ``relation`` (A relative to B), ``boxes``.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "blank").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (scene, q) in enumerate(reading_set(kind, n, seed, size)):
        img = scene.render(size)
        name = f"{kind}_{i:04d}.png"
        img.save(out / "images" / name, format="PNG", compress_level=PNG_COMPRESS)
        mean_colour_image(img).save(out / "blank" / name, format="PNG", compress_level=PNG_COMPRESS)
        records.append({"image_path": f"images/{name}", "blank_image_path": f"blank/{name}", "question": q.text,
                        "answer": q.answer, "form": q.form, "kind": scene.kind,
                        "objects": [o.name for o in scene.objects], "subject": q.subject,
                        "reference": q.reference, "relation": scene.relation,
                        "boxes": [list(b) for b in scene.boxes]})
    path = out / "reading.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=True) for r in records) + "\n]\n", encoding="utf-8")
    return path
