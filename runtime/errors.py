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
    """An alpha / threshold is non-finite, non-positive or of the wrong shape."""


class BundleError(RuntimeInputError):
    """A bundle folder is incomplete, corrupted, or of an unknown schema."""


class ProviderError(RuntimeInputError):
    """An execution provider was requested that this machine cannot run."""
