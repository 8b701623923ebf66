"""``calibration.json``: the AdaptVis settings ``just calibrate`` chose for a bundle, with the run's record.

One reader and one encoder for the file.  ``runtime.Bundle`` reads it when a bundle is opened (the
settings it steers with, ``adaptvis``; ``just evaluate`` also reads which subset they were chosen on
and the best constant alpha of the dev split); ``runtime.bundle_write.write_calibration`` writes and
signs it (the document checked first, as a reader would).  A malformed file is a ``BundleError``
naming the field, for every reader alike: a bundle never steers with settings half-read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError, SteeringError
from .steering import AdaptVis, check_alpha

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    adaptvis: AdaptVis                   # what the bundle steers with by default
    subset: str | None                   # the dataset subset it was calibrated on, when recorded
    scalingvis_alpha: float | None       # the best constant alpha on the calibration's dev split, when recorded


def read_calibration(folder: str | Path) -> Calibration | None:
    """The calibration in ``folder``, or None when it has none; BundleError when the file is malformed."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is malformed ({type(e).__name__}: {e}); fix or delete it") from None
    return parse_calibration(doc, path)


def parse_calibration(doc, where) -> Calibration:
    """A ``calibration.json`` document, checked; BundleError naming ``where`` and the field."""
    try:
        chosen = doc["adaptvis"]
        for key in ("alpha_low", "alpha_high"):
            check_alpha(key, chosen[key])
        adaptvis = AdaptVis(low=chosen["alpha_low"], high=chosen["alpha_high"], threshold=chosen["threshold"],
                            round_confidence=bool(chosen.get("round_confidence", False)),
                            apply_to=chosen.get("apply_to", "last_token"))
        subset = (doc.get("dataset") or {}).get("subset")
        scaling = ((doc.get("metrics") or {}).get("test") or {}).get("scalingvis", {}).get("alpha")
        if scaling is not None:
            check_alpha("metrics.test.scalingvis.alpha", scaling)
            scaling = float(scaling)
    except (ValueError, KeyError, TypeError, AttributeError, SteeringError) as e:
        raise BundleError(f"{where} is malformed ({type(e).__name__}: {e}); fix or delete it") from None
    return Calibration(adaptvis, subset if isinstance(subset, str) else None, scaling)


def encode_calibration(document: dict) -> bytes:
    """The file's bytes for ``document``, after checking it as ``read_calibration`` would (BundleError)."""
    parse_calibration(document, "the calibration document")
    try:
        return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise BundleError(f"the calibration document cannot be written as JSON: {e}") from None
