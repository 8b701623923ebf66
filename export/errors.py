"""Exceptions the exporter raises for caller mistakes and failed checks."""
from __future__ import annotations

from runtime.errors import BundleExistsError    # the one class: the output folder holds something, no --force

__all__ = ["ExportError", "UnsupportedModelError", "UnsupportedOptionError", "SourceNotFoundError",
           "BundleExistsError", "ParityError"]


class ExportError(RuntimeError):
    """Base class: the export stopped and left no bundle behind."""


class UnsupportedModelError(ExportError):
    """The checkpoint is not an architecture this exporter handles."""


class UnsupportedOptionError(ExportError):
    """An option the checkpoint's family's exporter does not take (a LLaVA-only one for a Qwen checkpoint)."""


class SourceNotFoundError(ExportError):
    """The hub id / local folder could not be found or reached."""


class ParityError(ExportError):
    """An exported graph's outputs differ from PyTorch beyond the tolerance."""
