"""Query parameter types shared by the list routes (bounded so no value can reach the store unchecked)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

from ..errors import ValidationError
from ..records import INT32_MAX, INT64_MAX, NO_NUL_PATTERN

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1-1000).")]
Cursor = Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page.")]
# ids and names never hold NUL: refused (422) before any store sees them, on SQLite and PostgreSQL alike
IdFilter = Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN)]
NameFilter = Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN)]
RequiredId = Annotated[str, Query(min_length=1, max_length=128, pattern=NO_NUL_PATTERN)]
PathId = Annotated[str, Path(min_length=1, max_length=1024, pattern=NO_NUL_PATTERN,
                             description="A record id (no NUL characters).")]
Version = Annotated[int | None, Query(ge=0, le=INT32_MAX)]
Number = Annotated[float | None, Query(allow_inf_nan=False, ge=-1e300, le=1e300)]
Epoch = Annotated[float | None, Query(allow_inf_nan=False, ge=0, le=1e11, description="Epoch seconds.")]
Text = Annotated[str | None, Query(min_length=1, max_length=1000, pattern=r"^[^\x00]*$",
                                   description="Text searched in messages (no NUL characters).")]

DEFAULT_LIMIT = 100


def event_id(raw: str, what: str = "Last-Event-ID") -> int:
    """An event id as a client sent it (``Last-Event-ID``): an integer from 0 to 2^63-1 (the column's range),
    else a 422."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > INT64_MAX:
        raise ValidationError(f"{what} must be an event id, an integer from 0 to {INT64_MAX}; got {raw[:40]!r}",
                              code="invalid_event_id")
    return int(text)


def compact(**filters: Any) -> dict[str, Any]:
    """The filters actually given (None means "not given")."""
    return {k: v for k, v in filters.items() if v is not None}


__all__ = ["Limit", "Cursor", "IdFilter", "NameFilter", "RequiredId", "PathId", "Version", "Number", "Epoch", "Text",
           "DEFAULT_LIMIT", "compact", "event_id"]
