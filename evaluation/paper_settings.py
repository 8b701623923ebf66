"""The AdaptVis authors' settings for LLaVA-1.5-7B, per subset: the defaults where a bundle has no
calibration, and the reference threshold of the grid search's tie-break."""
from __future__ import annotations

from typing import Optional

#: subset -> (alpha_low, alpha_high, threshold, ScalingVis alpha).
PAPER_SETTINGS: dict[str, tuple[float, float, float, float]] = {
    "Controlled_Images_A": (0.5, 1.5, 0.40, 0.8),
    "Controlled_Images_B": (0.5, 1.5, 0.35, 0.8),
    "COCO_QA_one_obj": (0.5, 1.2, 0.30, 1.2),
    "COCO_QA_two_obj": (0.5, 1.2, 0.30, 1.2),
    "VG_QA_one_obj": (0.5, 2.0, 0.20, 2.0),
    "VG_QA_two_obj": (0.5, 2.0, 0.20, 2.0),
    "VSR": (0.5, 1.2, 0.64, 0.5),
}

#: Subsets without a paper setting of their own, and the subset whose setting they borrow
#: (for the grid's tie-break threshold in calibration, for the default settings in evaluate).
PAPER_ALIASES = {"Controlled_Synthetic": "Controlled_Images_A"}


def paper_setting(subset: str) -> tuple[Optional[tuple], str]:
    """The paper's setting for ``subset`` (through :data:`PAPER_ALIASES`) and where it came from;
    ``(None, "")`` for a subset the paper did not calibrate."""
    key = PAPER_ALIASES.get(subset, subset)
    if key in PAPER_SETTINGS:
        return PAPER_SETTINGS[key], f"paper, {key}"
    return None, ""
