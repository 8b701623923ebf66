"""Diagnostics: where the model looked, whether that was on the objects, and what its eyes knew.

* :mod:`diagnostics.explain` -- one PNG: the attention over the image at alpha = 1 and at the
  alpha AdaptVis chose, with the answer and the per-layer image share
  (``python -m diagnostics explain BUNDLE IMAGE "question"``);
* the share of image attention inside objects' boxes lives in :mod:`evaluation.alignment`
  (scored with every evaluation where items have boxes; the map here reads it too);
* :mod:`diagnostics.probe` -- a linear probe on the vision graph's image features beside the
  VLM's own and blind accuracy (``python -m diagnostics probe BUNDLE DATASET``).

Plots need matplotlib (the ``calibration`` extra), imported when one is drawn.
"""
