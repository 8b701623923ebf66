"""Exceptions of the dataset readers.

Readers never raise for one bad record: they record a :class:`~readers.items.Problem`
(file, line, message) and go on.  They raise only when there is nothing to read at all.
"""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset could not be read as a whole."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The annotation file or the folder given does not exist."""


class UnknownFormatError(DatasetError):
    """The file or folder is not one of the formats ``load_dataset`` recognises,
    or a folder holds several datasets and the caller did not say which one."""
