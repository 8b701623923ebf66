"""Exceptions the exporter raises for caller mistakes and failed checks."""
from __future__ import annotations


class ExportError(RuntimeError):
    """Base class: the export stopped and left no bundle behind."""


class UnsupportedModelError(ExportError):
    """The checkpoint is not an architecture this exporter handles."""


class SourceNotFoundError(ExportError):
    """The hub id / local folder could not be found or reached."""


class BundleExistsError(ExportError):
    """The output folder already holds something and --force was not given."""


class ParityError(ExportError):
    """An exported graph's outputs differ from PyTorch beyond the tolerance."""
