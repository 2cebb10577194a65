"""Reads of PostgresStore: the queries both stores share (store/reads.py, in PostgreSQL's dialect) on pooled
autocommit connections, and message search's own plan (a time-boxed newest-first walk, else the trigram
index)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors

from ..availability import is_unavailable
from ..types import Json
from .base import Page
from .dialect import POSTGRES
from .filters import PG_DENSE_TEXT_SQL, like_pattern, traj_page_sql, traj_where
from .reads import StoreReads
from .rows import TRAJ_COLS

PG_DENSE_BUDGET_MS = 50  # message search: how long the newest-first walk may take before the indexed plan


class PgReads(StoreReads):
    dialect = POSTGRES
    ids_order = " ORDER BY seq"
    _pool: Any

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        from ..errors import StoreError, StoreUnavailableError

        if self._pool is None:
            raise StoreError("store is not open")
        avail = getattr(self, "availability", None)  # during an outage, fail fast rather than queue for 30 s
        try:
            with self._pool.connection(timeout=None if avail is None or avail.available else 3.0) as conn:
                yield conn
        except psycopg.OperationalError as e:  # the server went away: a 503 the caller may retry
            if not is_unavailable(e):
                raise
            raise StoreUnavailableError(f"database unavailable, retry shortly: {str(e).strip()}") from e

    def list_trajectories(self, filters: Json, cursor: str | None, limit: int) -> Page:
        q = str(filters.get("q") or "").replace("\x00", "")  # text in PostgreSQL never holds NUL
        rows = None
        if q:  # walk the newest trajectories first, within a time budget (fast for common terms) ...
            where, args = traj_where({**filters, "q": None}, "%s")
            rows = self._traj_page([*where, PG_DENSE_TEXT_SQL], [*args, like_pattern(q)], filters, cursor, limit,
                                   budget_ms=PG_DENSE_BUDGET_MS)
        if rows is None:  # ... else collect the matches through the trigram index (fast for rare ones)
            where, args = traj_where(filters, "%s")
            rows = self._traj_page(where, args, filters, cursor, limit)
        assert rows is not None
        return self._traj_rows_page(rows, limit)

    def _traj_page(self, where: list[str], args: list[Any], filters: Json, cursor: str | None, limit: int,
                   budget_ms: int | None = None) -> list[Any] | None:
        """One keyset page of trajectories; with ``budget_ms``, None when the query ran out of time."""
        sql, args = traj_page_sql(where, args, filters, cursor, limit, TRAJ_COLS, "%s")
        if budget_ms is None:
            return self._all(sql, args)
        try:
            with self._conn() as conn, conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {int(budget_ms)}")
                return conn.execute(sql, args).fetchall()
        except psycopg.errors.QueryCanceled:
            return None


__all__ = ["PgReads"]
