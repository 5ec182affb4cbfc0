"""Exceptions and warnings raised by the data package."""

from __future__ import annotations


class EmptyDatasetError(ValueError):
    """A data source yielded no samples (an empty folder, a zero-length array)."""


class CorruptImageError(ValueError):
    """An image file could not be read or decoded (raised only in strict mode)."""


class CorruptImageWarning(UserWarning):
    """Some image files could not be decoded and were skipped."""


class ClassMismatchError(ValueError):
    """A split has a class folder its reference split (the training split) lacks: its labels cannot be aligned."""
