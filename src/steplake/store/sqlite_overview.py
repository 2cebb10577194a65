"""``read_overview`` of SqliteStore: the dashboard overview (store/overview.py) on a reader connection."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..types import Json
from .codec import dumps
from .overview import Row, compute_overview

# every probe of one halving in one statement: the first step at or after each mid (a rowid seek each)
_PROBE_SQL = ("SELECT m.value, s.seq, s.created_at FROM json_each(?) AS m JOIN steps AS s"
              " ON s.seq = (SELECT seq FROM steps WHERE seq >= m.value ORDER BY seq LIMIT 1)")


class SqliteOverviewSource:
    """:class:`~steplake.store.overview.OverviewSource` on one SQLite connection."""

    bucket_sql = "CAST(created_at / ? AS INTEGER)"  # created_at > 0: truncation is floor

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    def first_steps(self, mids: Sequence[int]) -> dict[int, tuple[int, float]]:
        rows = self.conn.execute(_PROBE_SQL, (dumps([int(m) for m in mids]).decode(),)).fetchall()
        return {int(mid): (int(seq), float(at)) for mid, seq, at in rows}

    def range_rows(self, select: str, ranges: Sequence[tuple[int, int]]) -> list[Row]:
        sql = f"SELECT {select} FROM steps WHERE seq >= ? AND seq < ?"  # in process: a statement per range is cheap
        return [self.conn.execute(sql, (int(lo), int(hi))).fetchone() for lo, hi in ranges]


class SqliteOverview:
    """Mixin of SqliteStore."""

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def read_overview(self, policy_version: int, window: float, bucket: float, now: float | None = None) -> Json:
        now = time.time() if now is None else now
        return compute_overview(SqliteOverviewSource(self._reader()), policy_version, window, bucket, now)


__all__ = ["SqliteOverview", "SqliteOverviewSource"]
