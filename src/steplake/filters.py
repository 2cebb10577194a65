"""The trajectory filter, parsed one way everywhere (the ground floor: records and errors only).

:class:`~steplake.records.TrajectoryFilter` holds the field set. Here:

- :class:`ExportFilter` adds the batch-style fields that exports apply after the store's selection
  (``trainable_only``, ``reward_present``, ``quality_in`` ..., as ``POST /batches`` reads them);
- :class:`TrajectoryQuery` reads the filter from a query string (``GET /trajectories``: FastAPI fills it
  beside ``cursor`` and ``limit``);
- :func:`parse_filter` is the one normalizer of a mapping (``steplake export --filter``, ``POST /exports``,
  ``POST /rewards/run``, the dashboard's curate-all): unknown names and values of the wrong type are a
  :class:`~steplake.errors.FilterError` naming the filter; ``None`` means "not given";
- :func:`parse_cursor` reads a list's cursor (the stores' pages, the exports list).

The stores read ``TrajectoryFilter.query()``, a plain dict of the fields given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field

from .errors import FilterError, ValidationError
from .records import INT32_MAX, INT64_MAX, NO_NUL_PATTERN, NUL_MESSAGE, NoNul, TrajectoryFilter


def _labels(value: Any) -> Any:
    """``"good,ok"`` (a CLI or query-string value) → ``["good", "ok"]``; list items are stripped too."""
    items = value.split(",") if isinstance(value, str) else value
    return [x.strip() for x in items] if isinstance(items, list) and all(isinstance(x, str) for x in items) else items


Labels = Annotated[list[Annotated[str, Field(min_length=1, max_length=1000), NoNul]], BeforeValidator(_labels)]


class ExportFilter(TrajectoryFilter):
    """The trajectory filter plus the batch-style fields exports apply to the selected trajectories."""

    trainable_only: bool | None = None
    reward_present: bool | None = None
    quality_in: Labels | None = None
    quality_not_in: Labels | None = None
    max_staleness: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    drop_zero_variance: bool | None = None


class TrajectoryQuery(TrajectoryFilter):
    """The trajectory filter as query parameters; the other parameters of the route (``cursor``, ``limit``)
    pass by it, and unknown ones are ignored as FastAPI ignores undeclared query parameters."""

    model_config = ConfigDict(extra="ignore")


LOCAL_FILTERS = frozenset(ExportFilter.model_fields) - frozenset(TrajectoryFilter.model_fields)
F = TypeVar("F", bound=TrajectoryFilter)


def parse_filter(raw: Mapping[str, Any] | None, model: type[F]) -> F:
    """``raw`` (strings from a CLI or a query string are coerced) as ``model``; FilterError names the first
    unknown filter (``unknown filter 'x'; known: ...``) or the first value that does not fit."""
    given = dict(raw or {})
    unknown = sorted(k for k in given if k not in model.model_fields)
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r}; known: {', '.join(sorted(model.model_fields))}",
                          code="unknown_filter")
    try:
        return model.model_validate({k: v for k, v in given.items() if v is not None})
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        name = first["loc"][0] if first["loc"] else "filter"
        nul = first["type"] == "string_pattern_mismatch" and (first.get("ctx") or {}).get("pattern") == NO_NUL_PATTERN
        raise FilterError(f"filter {name!r}: {NUL_MESSAGE if nul else first['msg']}", code="invalid_filter") from None


def parse_cursor(c: str) -> int:
    """A list cursor: a row sequence number, 0 to 2^63-1 (a BIGINT / SQLite INTEGER); anything else is a 422."""
    try:
        n = int(c)
    except ValueError:
        n = -1
    if not 0 <= n <= INT64_MAX:
        raise ValidationError(f"invalid cursor {c[:40]!r}: use the next_cursor of the previous page",
                              code="invalid_cursor")
    return n


__all__ = ["ExportFilter", "LOCAL_FILTERS", "TrajectoryFilter", "TrajectoryQuery", "parse_filter", "parse_cursor"]
