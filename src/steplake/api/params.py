"""Query parameter types shared by the list routes (bounded so no value can reach the store unchecked)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from ..records import INT32_MAX

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1-1000).")]
Cursor = Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page.")]
IdFilter = Annotated[str | None, Query(max_length=128)]
NameFilter = Annotated[str | None, Query(max_length=128)]
Version = Annotated[int | None, Query(ge=0, le=INT32_MAX)]
Number = Annotated[float | None, Query(allow_inf_nan=False, ge=-1e300, le=1e300)]
Epoch = Annotated[float | None, Query(allow_inf_nan=False, ge=0, le=1e11, description="Epoch seconds.")]
Text = Annotated[str | None, Query(min_length=1, max_length=1000, pattern=r"^[^\x00]*$",
                                   description="Text searched in messages (no NUL characters).")]

DEFAULT_LIMIT = 100


def compact(**filters: Any) -> dict[str, Any]:
    """The filters actually given (None means "not given")."""
    return {k: v for k, v in filters.items() if v is not None}


__all__ = ["Limit", "Cursor", "IdFilter", "NameFilter", "Version", "Number", "Epoch", "Text", "DEFAULT_LIMIT",
           "compact"]
