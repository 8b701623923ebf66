"""Per-subset answer options and reference question text (without the chat template).

The reference (AdaptVis ``prompts/*_with_answer_*_options.jsonl`` and
``model_zoo/llava15.py``) wraps every question as::

    <image>\\nUSER: {question}\\nASSISTANT:

(VSR uses ``User: <image>\\n {question} Assistant:``; see :data:`VSR_QUESTION`).
The templates here give ``{question}`` only; the runtime adds the template.

Options are listed in the order the reference prompt lists them.  The reference
prompt files were hand-edited and are not fully uniform (``"above, or below"`` vs
``"above or below"``, stray blank lines, ``"Where are the sunglasses"``); we use one
regular form per subset: ``"{a}, {b}, ... or {z}"``, and ``are`` for nouns that read as
plural (see :func:`copula`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class SubsetSpec:
    name: str
    options: tuple[str, ...]
    #: Controlled sets: relation as written in the file name -> gold option word.
    relations: Optional[Mapping[str, str]] = None
    #: True where the question names a reference object ("in relation to the {B}").
    two_object: bool = True

    @property
    def options_text(self) -> str:
        return options_text(self.options)


CONTROLLED_A = "Controlled_Images_A"
CONTROLLED_B = "Controlled_Images_B"
CONTROLLED_SYNTHETIC = "Controlled_Synthetic"
COCO_ONE = "COCO_QA_one_obj"
COCO_TWO = "COCO_QA_two_obj"
VG_ONE = "VG_QA_one_obj"
VG_TWO = "VG_QA_two_obj"
VSR = "VSR"

_REL_A = {"on": "on", "under": "under", "left_of": "left", "right_of": "right"}
_REL_B = {"left_of": "left", "right_of": "right", "in-front_of": "front", "behind": "behind"}

SUBSETS: dict[str, SubsetSpec] = {
    CONTROLLED_A: SubsetSpec(CONTROLLED_A, ("left", "right", "on", "under"), _REL_A),
    CONTROLLED_B: SubsetSpec(CONTROLLED_B, ("left", "right", "front", "behind"), _REL_B),
    CONTROLLED_SYNTHETIC: SubsetSpec(CONTROLLED_SYNTHETIC, ("left", "right", "on", "under"), _REL_A),
    COCO_ONE: SubsetSpec(COCO_ONE, ("left", "right", "top", "bottom"), two_object=False),
    COCO_TWO: SubsetSpec(COCO_TWO, ("left", "right", "above", "below")),
    VG_ONE: SubsetSpec(VG_ONE, ("left", "right", "front", "behind", "top", "bottom"), two_object=False),
    VG_TWO: SubsetSpec(VG_TWO, ("left", "right", "front", "behind", "above", "below")),
    VSR: SubsetSpec(VSR, ("yes", "no"), two_object=False),
}

CONTROLLED_SUBSETS = (CONTROLLED_A, CONTROLLED_B, CONTROLLED_SYNTHETIC)

#: Reference VSR prompt (AdaptVis ``get_judge_scores_vsr_batched``):
#: ``"User: <image>\n Determine whether the description about the spatial relationship
#: is correct or not. Answer with yes or no: " + caption + " Assistant:"``.
#: The question part, without the template:
VSR_QUESTION = (
    "Determine whether the description about the spatial relationship is correct or not. "
    "Answer with yes or no: {caption}"
)


def options_text(options: tuple[str, ...]) -> str:
    """``("left", "right", "on", "under")`` -> ``"left, right, on or under"``."""
    if len(options) == 1:
        return options[0]
    return ", ".join(options[:-1]) + " or " + options[-1]


def copula(noun: str) -> str:
    """``"are"`` for nouns that read as plural (``sunglasses``, ``shoes``, ``scissors``),
    else ``"is"``.  Rule: the last word ends in ``s`` but not in ``ss`` / ``us`` / ``is``.
    (The reference prompt files wrote ``are`` for exactly such nouns by hand.)"""
    last = noun.strip().split()[-1].lower() if noun.strip() else ""
    if last.endswith("s") and not last.endswith(("ss", "us", "is")):
        return "are"
    return "is"


def two_object_question(obj: str, ref: str, spec: SubsetSpec) -> str:
    """``Where is the {obj} in relation to the {ref}? Answer with left, right, on or under.``"""
    return f"Where {copula(obj)} the {obj} in relation to the {ref}? Answer with {spec.options_text}."


def one_object_question(obj: str, spec: SubsetSpec) -> str:
    """``Where is the {obj} in the photo? Answer with left, right, top or bottom.``"""
    return f"Where {copula(obj)} the {obj} in the photo? Answer with {spec.options_text}."


def vsr_question(caption: str) -> str:
    return VSR_QUESTION.format(caption=caption.strip())
