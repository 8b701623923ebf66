"""Everyday objects whose names carry a language prior, drawn simply with Pillow.

A cup goes *on* a table; a table *on* a cup is the unfamiliar scene.  Each object is a
few filled polygons and ellipses in one colour with a dark outline, filling its box
exactly (the box is tight, as for the coloured shapes).  ``ASPECT`` is each object's
width / height, so a plate is flat and a lamp is tall.

``PRIOR_PAIRS`` are the ordered pairs (X, Y) for which "X on Y" is the familiar
arrangement; the reversed pair (Y, X) has "under" as its familiar relation.
"""
from __future__ import annotations

from PIL import ImageDraw

THINGS = ("cup", "plate", "table", "book", "box", "ball", "lamp", "chair")
ASPECT = {"cup": 1.0, "plate": 2.2, "table": 1.5, "book": 1.35, "box": 1.0, "ball": 1.0, "lamp": 0.7,
          "chair": 0.75}
#: (X, Y): "X on Y" is what the world (and a language model's prior) expects.
PRIOR_PAIRS = (("cup", "plate"), ("cup", "table"), ("plate", "table"), ("book", "table"),
               ("lamp", "table"), ("box", "table"), ("ball", "box"), ("book", "chair"))

Box = tuple[float, float, float, float]
Fill = tuple[int, int, int]


def prior_relation(subject: str, reference: str) -> str | None:
    """The relation a language prior expects for "where is the subject relative to the reference"."""
    if (subject, reference) in PRIOR_PAIRS:
        return "on"
    if (reference, subject) in PRIOR_PAIRS:
        return "under"
    return None


def lighter(c: Fill, t: float = 0.45) -> Fill:
    return tuple(int(round(v + (255 - v) * t)) for v in c)  # type: ignore[return-value]


def draw_thing(draw: ImageDraw.ImageDraw, kind: str, box: Box, fill: Fill, outline: Fill, width: int) -> None:
    """Draw ``kind`` filling ``box`` = (x0, y0, x1, y1), inclusive pixel ends, on ``draw``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0

    def at(u: float, v: float) -> tuple[float, float]:          # unit coordinates -> pixels
        return (x0 + u * w, y0 + v * h)

    def rect(u0, v0, u1, v1, colour=fill):
        draw.rectangle((*at(u0, v0), *at(u1, v1)), fill=colour, outline=outline, width=width)

    def poly(points, colour=fill):
        draw.polygon([at(u, v) for u, v in points], fill=colour, outline=outline, width=width)

    def ellipse(u0, v0, u1, v1, colour=fill):
        draw.ellipse((*at(u0, v0), *at(u1, v1)), fill=colour, outline=outline, width=width)

    if kind == "cup":        # tapered body, rim, handle on the right
        draw.ellipse((*at(0.62, 0.22), *at(1.0, 0.72)), fill=None, outline=outline, width=max(1, 3 * width))
        poly([(0.0, 0.08), (0.76, 0.08), (0.66, 1.0), (0.1, 1.0)])
        ellipse(0.0, 0.0, 0.76, 0.16, lighter(fill))
    elif kind == "plate":    # flat ellipse with a lighter well
        ellipse(0.0, 0.0, 1.0, 1.0)
        ellipse(0.18, 0.22, 0.82, 0.78, lighter(fill))
    elif kind == "table":    # top slab and two legs
        rect(0.08, 0.18, 0.2, 1.0)
        rect(0.8, 0.18, 0.92, 1.0)
        rect(0.0, 0.0, 1.0, 0.2)
    elif kind == "book":     # cover, pages, spine
        rect(0.0, 0.0, 1.0, 1.0)
        rect(0.14, 0.12, 0.94, 0.88, lighter(fill, 0.75))
        rect(0.0, 0.0, 0.14, 1.0)
    elif kind == "box":      # front face, top and side in perspective
        poly([(0.0, 0.25), (0.75, 0.25), (0.75, 1.0), (0.0, 1.0)])
        poly([(0.0, 0.25), (0.25, 0.0), (1.0, 0.0), (0.75, 0.25)], lighter(fill))
        poly([(0.75, 0.25), (1.0, 0.0), (1.0, 0.75), (0.75, 1.0)], lighter(fill, 0.2))
    elif kind == "ball":     # circle with a seam
        ellipse(0.0, 0.0, 1.0, 1.0)
        draw.arc((*at(-0.35, 0.1), *at(0.55, 0.9)), start=-60, end=60, fill=outline, width=width)
        draw.arc((*at(0.45, 0.1), *at(1.35, 0.9)), start=120, end=240, fill=outline, width=width)
    elif kind == "lamp":     # shade, stem, base
        rect(0.44, 0.45, 0.56, 0.9)
        rect(0.15, 0.88, 0.85, 1.0)
        poly([(0.25, 0.0), (0.75, 0.0), (1.0, 0.48), (0.0, 0.48)], lighter(fill))
    elif kind == "chair":    # back, seat, legs
        rect(0.0, 0.0, 0.18, 1.0)
        rect(0.82, 0.55, 0.96, 1.0)
        rect(0.0, 0.5, 1.0, 0.64)
    else:
        raise ValueError(f"unknown object {kind!r}; known: {', '.join(THINGS)}")
