"""Training scenes for the ``spatial`` model, drawn by the procedural benchmark itself.

Seeds: the benchmark's evaluation uses seeds 0..999; training draws with seeds from
:data:`TRAIN_SEED_BASE` and its in-training validation from :data:`VAL_SEED_BASE`, so
no scene that ``python -m calibration.synthetic OUT --seed S`` (S < 1000) draws was
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

from calibration.prompts import CONTROLLED_SYNTHETIC, SUBSETS, two_object_question
from calibration.synthetic import RELATIONS, plan, record, render

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
    """float32 [grid * grid, 2]: the share of each patch (row-major) inside box A and box B."""
    grid = image_size // patch_size
    edges = np.arange(grid + 1) * patch_size * size / image_size          # patch edges in render pixels
    out = np.zeros((grid, grid, 2), dtype=np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        ox = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)   # [grid]
        oy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)   # [grid]
        out[:, :, k] = np.outer(oy, ox) / (patch_size * size / image_size) ** 2
    return out.reshape(grid * grid, 2)
