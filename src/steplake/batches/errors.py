"""Errors raised by :mod:`steplake.batches`.

They subclass :class:`ValueError` (bad input data or arguments). When the package-wide tree in
``steplake/errors.py`` exists, the lead may re-home them there; the names are the public API.
"""

from __future__ import annotations

__all__ = ["BatchError", "ContinuityMismatchError", "SequenceTooLongError", "UnknownRecipeError"]


class BatchError(ValueError):
    """Base class for batch building errors (bad batch data or bad arguments)."""


class UnknownRecipeError(BatchError):
    """The recipe name is not one of ``RECIPES``."""


class ContinuityMismatchError(BatchError):
    """A step claims ``clean`` continuity but its ``prompt_ids`` do not extend its parent's sequence."""


class SequenceTooLongError(BatchError):
    """A row is longer than ``max_length`` and cannot be truncated under the chosen policy."""
