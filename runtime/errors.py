"""Exceptions the runtime raises for caller mistakes.

Every error a user can cause is one of these, so a robot's control loop can
catch ``runtime.errors.RuntimeInputError`` and keep the model loaded.
``assert`` is reserved for internal bugs.
"""
from __future__ import annotations


class RuntimeInputError(ValueError):
    """Base class: the call was rejected and nothing changed."""


class ImageError(RuntimeInputError):
    """The image could not be read, or is empty, truncated or too large."""


class PromptError(RuntimeInputError):
    """The question or prompt is empty, malformed, or longer than the context."""


class SteeringError(RuntimeInputError):
    """An alpha is non-finite, out of range or of the wrong shape, or a threshold outside [0, 1]."""


class NumericalError(RuntimeInputError):
    """The model's logits came out NaN or infinite: no answer is given, never a made-up one.

    ``steered`` says whether the pass that failed applied an alpha other than 1.
    """

    def __init__(self, message: str, steered: bool = False):
        super().__init__(message)
        self.steered = steered


class BundleError(RuntimeInputError):
    """A bundle folder is incomplete, corrupted, or of an unknown schema."""


class BundleExistsError(BundleError):
    """A new bundle's folder already holds something (or is its source) and replacing it was not asked for."""


class IOSpecError(BundleError):
    """A graph's inputs or outputs differ from what the manifest says they are (names, dtypes, ranks, roles)."""


class ProviderError(RuntimeInputError):
    """An execution provider was requested that this machine cannot run."""
