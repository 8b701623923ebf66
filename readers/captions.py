"""Gold relation word and object names from a WhatsUp COCO_QA / VG_QA caption.

The QA files hold ``[image_id, correct_caption, foil_caption]``.  Their captions read
``"A photo of a dog to the left of a person"`` (two objects) or
``"A photo of a dog on the left"`` (one object).  The reference (whatsup_vlms /
AdaptVis ``dataset_zoo/aro_datasets.py``) derives the relation for its per-relation
breakdown as follows, while its *scored* gold answers come from hand-written prompt
files:

* one object: the caption's last word (``left``/``right``/``top``/``bottom``);
* COCO two objects: ``"left of"`` -> left, ``"right of"`` -> right, ``"above"`` ->
  above, anything else -> below;
* VG two objects: ``left of`` / ``right of`` / ``front of`` / ``behind``, else ``top``.

We cannot ship the prompt files, so we parse the caption, and we refuse to guess: a
caption that matches no rule is reported as a problem instead of falling into an
"else" class.  Rules (case-insensitive; a leading ``"a photo of"`` and articles
``a``/``an``/``the`` are dropped; a trailing ``.`` is ignored), tried in this order:

two objects ``"{A} <phrase> {B}"``:

==========================================  ======
phrase                                      gold
==========================================  ======
``to the left of`` / ``on the left of`` /
``left of``                                 left
``to the right of`` / ``on the right of`` /
``right of``                                right
``in front of``                             front
``behind``                                  behind
``above`` / ``on top of`` / ``over``        above
``below`` / ``beneath`` / ``underneath`` /
``under``                                   below
==========================================  ======

one object ``"{A} on the <w>"`` / ``"{A} at the <w>"`` / ``"{A} in the <w>"``
(optionally followed by ``side``, ``of the photo`` / ``image`` / ``picture``) with
``<w>`` in left/right/top/bottom/front/back(-> behind); failing that, the reference
rule: the last word, if it is one of the subset's options.

The gold word must then be one of the subset's options (checked by the reader).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_TWO = [
    (r"(?:to|on) the left of|left of", "left"),
    (r"(?:to|on) the right of|right of", "right"),
    (r"in front of", "front"),
    (r"behind", "behind"),
    (r"on top of|above|over", "above"),
    (r"underneath|beneath|below|under", "below"),
]
_TWO_RE = [
    (re.compile(rf"^(?P<a>.+?)\s+(?:{phrase})\s+(?P<b>.+)$"), gold) for phrase, gold in _TWO
]
_ONE_RE = re.compile(
    r"^(?P<a>.+?)\s+(?:is\s+)?(?:on|at|in)\s+the\s+(?P<w>left|right|top|bottom|front|back)"
    r"(?:\s+side)?(?:\s+of\s+the\s+(?:photo|image|picture|frame))?$"
)
_ONE_WORD = {"back": "behind"}
_PREFIX = re.compile(r"^(?:a\s+)?(?:photo|picture|image)\s+of\s+", re.I)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.I)


@dataclass(frozen=True)
class ParsedCaption:
    obj: str
    gold: str
    ref: Optional[str]  # None for one-object captions


def _clean(text: str) -> str:
    s = " ".join(text.strip().lower().split())
    s = s.rstrip(" .!")
    s = _PREFIX.sub("", s)
    s = _ARTICLE.sub("", s)
    return s


def _noun(s: str) -> str:
    return _ARTICLE.sub("", s.strip()).strip()


def parse_two_object(caption: str) -> Optional[ParsedCaption]:
    s = _clean(caption)
    for rx, gold in _TWO_RE:
        m = rx.match(s)
        if m:
            a, b = _noun(m["a"]), _noun(m["b"])
            if a and b:
                return ParsedCaption(a, gold, b)
    return None


def parse_one_object(caption: str, options: tuple[str, ...] = ()) -> Optional[ParsedCaption]:
    s = _clean(caption)
    m = _ONE_RE.match(s)
    if m:
        w = _ONE_WORD.get(m["w"], m["w"])
        return ParsedCaption(_noun(m["a"]), w, None)
    words = s.split()
    if len(words) >= 2 and words[-1] in options:
        # Reference rule: the last word is the relation.  The object is what precedes
        # "on the" / "at the" / "in the" if present, else all but the last word.
        body = " ".join(words[:-1])
        body = re.sub(r"\s+(?:is\s+)?(?:on|at|in)(?:\s+the)?$", "", body)
        return ParsedCaption(_noun(body), words[-1], None)
    return None


def parse_caption(caption: str, two_object: bool, options: tuple[str, ...] = ()) -> Optional[ParsedCaption]:
    """Parse a caption as described in the module docstring; ``None`` if no rule fits."""
    if two_object:
        return parse_two_object(caption)
    return parse_one_object(caption, options)
