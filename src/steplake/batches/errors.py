"""Errors raised by :mod:`steplake.batches`.

They belong to the package tree (:class:`steplake.errors.ValidationError`, HTTP 422 at the edge) and
are also :class:`ValueError`, so library users can catch either.
"""

from __future__ import annotations

from steplake.errors import ValidationError

__all__ = ["BatchError", "ContinuityMismatchError", "SequenceTooLongError", "UnknownRecipeError"]


class BatchError(ValidationError, ValueError):
    """Base class for batch building errors (bad batch data or bad arguments)."""

    code = "batch_error"


class UnknownRecipeError(BatchError):
    """The recipe name is not one of ``RECIPES``."""

    code = "unknown_recipe"


class ContinuityMismatchError(BatchError):
    """A step claims ``clean`` continuity but its ``prompt_ids`` do not extend its parent's sequence."""

    code = "continuity_mismatch"


class SequenceTooLongError(BatchError):
    """A row is longer than ``max_length`` and cannot be truncated under the chosen policy."""

    code = "sequence_too_long"
