"""``read_overview`` of PostgresStore: the dashboard overview (store/overview.py) on one pooled connection,
the same numbers as SQLite's (never a sample)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from ..types import Json
from .overview import Row, compute_overview

# every probe of one halving in one round trip: the first step at or after each mid
_PROBE_SQL = ("SELECT m.mid, s.seq, s.created_at FROM unnest(%s::bigint[]) AS m(mid)"
              " CROSS JOIN LATERAL (SELECT seq, created_at FROM steps WHERE seq >= m.mid ORDER BY seq LIMIT 1) AS s")


class PgOverviewSource:
    """:class:`~steplake.store.overview.OverviewSource` on one PostgreSQL connection."""

    bucket_sql = "floor(created_at / ?)::bigint"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql.replace("?", "%s"), tuple(args)).fetchall()

    def first_steps(self, mids: Sequence[int]) -> dict[int, tuple[int, float]]:
        rows = self.conn.execute(_PROBE_SQL, (list(mids),)).fetchall()
        return {int(mid): (int(seq), float(at)) for mid, seq, at in rows}

    def range_rows(self, select: str, ranges: Sequence[tuple[int, int]]) -> list[Row]:
        sql = (f"SELECT s.* FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS r(lo, hi, i) CROSS JOIN LATERAL"
               f" (SELECT {select} FROM steps WHERE seq >= r.lo AND seq < r.hi) AS s ORDER BY r.i")  # one round trip
        return self.conn.execute(sql, ([int(lo) for lo, _ in ranges], [int(hi) for _, hi in ranges])).fetchall()


class PgOverview:
    """Mixin of PostgresStore."""

    def _conn(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def read_overview(self, policy_version: int, window: float, bucket: float, now: float | None = None) -> Json:
        now = time.time() if now is None else now
        with self._conn() as conn:
            return compute_overview(PgOverviewSource(conn), policy_version, window, bucket, now)


__all__ = ["PgOverview", "PgOverviewSource"]
