"""``read_overview`` of SqliteStore: the dashboard overview (store/overview.py) on a reader connection."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ..types import Json
from .overview import Row, compute_overview


class SqliteOverviewSource:
    """:class:`~steplake.store.overview.OverviewSource` on one SQLite connection (probes are in-process
    b-tree lookups, so one query per probe)."""

    bucket_sql = "CAST(created_at / ? AS INTEGER)"  # created_at > 0: truncation is floor

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    def first_steps(self, mids: Sequence[int]) -> dict[int, tuple[int, float]]:
        out: dict[int, tuple[int, float]] = {}
        for mid in mids:
            row = self.conn.execute("SELECT seq, created_at FROM steps WHERE seq >= ? ORDER BY seq LIMIT 1",
                                    (mid,)).fetchone()
            if row is not None:
                out[mid] = (int(row[0]), float(row[1]))
        return out


class SqliteOverview:
    """Mixin of SqliteStore."""

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def read_overview(self, policy_version: int, window: float, bucket: float, now: float | None = None) -> Json:
        now = time.time() if now is None else now
        return compute_overview(SqliteOverviewSource(self._reader()), policy_version, window, bucket, now)


__all__ = ["SqliteOverview", "SqliteOverviewSource"]
