"""Training scenes for the ``spatial`` model, drawn by the procedural benchmark itself.

Seeds: the benchmark's evaluation uses seeds 0..999; training draws with seeds from
:data:`TRAIN_SEED_BASE` and its in-training validation from :data:`VAL_SEED_BASE`, so
no scene that ``python -m scenes OUT --seed S`` (S < 1000) draws was
trained on.  Each seed gives one chunk of :data:`CHUNK` items (pairs of both kinds,
all four relations), rendered at a side drawn per chunk from :data:`RENDER_SIZES`
(the benchmark's default is 336) and resized to the model's input as the runtime does
(PIL bicubic, shortest edge, centre crop).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from readers.prompts import CONTROLLED_SYNTHETIC, SUBSETS, two_object_question
from scenes.reading_scenes import INVERSE, training_item
from scenes.synthetic import COLOURS, RELATIONS, SHAPES, plan, record, render
from scenes.things import THINGS

TRAIN_SEED_BASE = 1000
VAL_SEED_BASE = 500_000
CHUNK = 400
RENDER_SIZES = (160, 200, 240, 288, 336, 384, 448)


@dataclass
class Scenes:
    pixels: np.ndarray          # uint8 [N, S, S, 3]: resized to the model's input, before normalisation
    relation: np.ndarray        # int64 [N]: index into RELATIONS
    cover: np.ndarray           # float32 [N, T, 2]: share of each patch inside A's box, B's box
    questions: list[str]        # the benchmark's question for the item
    kinds: list[str]            # "shape" | "thing"
    familiar: list              # True / False / None (shapes)

    def __len__(self) -> int:
        return len(self.relation)


def draw(n: int, seed_base: int, image_size: int, patch_size: int, progress=None) -> Scenes:
    """``n`` scenes from seeds ``seed_base``, ``seed_base + 1``, ... (``CHUNK`` items each)."""
    if seed_base < 1000:
        raise ValueError(f"seeds below 1000 are the benchmark's evaluation seeds; got seed_base={seed_base}")
    spec = SUBSETS[CONTROLLED_SYNTHETIC]
    pixels, relation, cover, questions, kinds, familiar = [], [], [], [], [], []
    seed = seed_base
    while len(relation) < n:
        size = random.Random(seed).choice(RENDER_SIZES)
        for item in plan(CHUNK, seed, size, objects="mixed"):
            if len(relation) == n:
                break
            img = render(item.a, item.b, item.boxes, size, item.background)
            img = img.resize((image_size, image_size), resample=Image.BICUBIC, reducing_gap=None)
            pixels.append(np.asarray(img))
            relation.append(RELATIONS.index(item.relation))
            cover.append(patch_cover(item.boxes, size, image_size, patch_size))
            questions.append(two_object_question(item.a.name, item.b.name, spec))
            rec = record(item)
            kinds.append(rec["kind"])
            familiar.append(rec["familiar"])
            if progress is not None:
                progress.update(1)
        seed += 1
    return Scenes(np.stack(pixels), np.asarray(relation, dtype=np.int64), np.stack(cover), questions, kinds, familiar)


def patch_cover(boxes, size: int, image_size: int, patch_size: int) -> np.ndarray:
    """float32 [grid * grid, len(boxes)]: the share of each patch (row-major) inside each box."""
    grid = image_size // patch_size
    edges = np.arange(grid + 1) * patch_size * size / image_size          # patch edges in render pixels
    out = np.zeros((grid, grid, len(boxes)), dtype=np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        ox = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)   # [grid]
        oy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)   # [grid]
        out[:, :, k] = np.outer(oy, ox) / (patch_size * size / image_size) ** 2
    return out.reshape(grid * grid, len(boxes))


# ----------------------------------------------------------- reading scenes
#: Per-patch classes the eyes learn: the covering object's colour, its shape, and its relation
#: to its partner in the asked pair (a distractor has none).
COLOUR_CLASSES = ("none", *COLOURS)
SHAPE_CLASSES = ("none", *SHAPES, *THINGS)
CODE_CLASSES = (*RELATIONS, "none")
MAX_OBJECTS = 3


@dataclass
class ReadingScenes:
    pixels: np.ndarray          # uint8 [N, S, S, 3]
    cover: np.ndarray           # float32 [N, T, 3]: share of each patch inside each object's box (A, B, C)
    colour: np.ndarray          # int64 [N, 3]: COLOUR_CLASSES index (0: no such object)
    shape: np.ndarray           # int64 [N, 3]: SHAPE_CLASSES index
    code: np.ndarray            # int64 [N, 3]: CODE_CLASSES index: A's relation to B, B's to A, "none"
    questions: list[str]
    answers: list[str]
    forms: list[str]
    kinds: list[str]
    words: list[list[str]]      # per object, the words that name it (for the projector's target)

    def __len__(self) -> int:
        return len(self.questions)


def draw_reading(n: int, seed_base: int, image_size: int, patch_size: int, progress=None) -> ReadingScenes:
    """``n`` reading items (:func:`scenes.reading_scenes.training_item`), seeds ``seed_base + i``."""
    if seed_base < 1000:
        raise ValueError(f"seeds below 1000 are the benchmark's evaluation seeds; got seed_base={seed_base}")
    t = (image_size // patch_size) ** 2
    pixels = np.zeros((n, image_size, image_size, 3), np.uint8)
    cover = np.zeros((n, t, MAX_OBJECTS), np.float32)
    colour, shape = np.zeros((n, MAX_OBJECTS), np.int64), np.zeros((n, MAX_OBJECTS), np.int64)
    code = np.full((n, MAX_OBJECTS), CODE_CLASSES.index("none"), np.int64)
    questions, answers, forms, kinds, words = [], [], [], [], []
    for i in range(n):
        seed = seed_base + i
        size = random.Random(-seed).choice(RENDER_SIZES)
        scene, q = training_item(seed, size)
        img = scene.render(size).resize((image_size, image_size), resample=Image.BICUBIC, reducing_gap=None)
        pixels[i] = np.asarray(img)
        for k, (obj, box) in enumerate(zip(scene.objects, scene.boxes)):
            cover[i, :, k] = patch_cover((box,), size, image_size, patch_size)[:, 0]
            colour[i, k], shape[i, k] = COLOUR_CLASSES.index(obj.colour), SHAPE_CLASSES.index(obj.shape)
        code[i, 0], code[i, 1] = RELATIONS.index(scene.relation), RELATIONS.index(INVERSE[scene.relation])
        questions.append(q.text)
        answers.append(q.answer)
        forms.append(q.form)
        kinds.append(scene.kind)
        words.append([o.name for o in scene.objects])
        if progress is not None:
            progress.update(1)
    return ReadingScenes(pixels, cover, colour, shape, code, questions, answers, forms, kinds, words)
