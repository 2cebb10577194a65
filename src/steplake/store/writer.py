"""One writer thread with group commit.

Jobs are closures ``fn(conn) -> result`` run in arrival order. The thread takes every job queued at the
moment it wakes, runs each in its own SAVEPOINT (a failing job is rolled back alone and gets its
exception), then commits once: while one commit is being made durable, the next group accumulates.
A job's result (or error) is delivered only after the commit, so "answered" implies "durable".
A disk-full error (SQLITE_FULL) is delivered as ``StorageFullError`` (HTTP 507) and marks ``health``.
The queue, the grouping and the delivery are store/commit.py's, shared with the PostgreSQL committer.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from ..types import Json
from .codec import dumps
from .commit import GroupCommit, Result
from .health import StorageHealth, is_disk_full, storage_full_error

log = logging.getLogger("steplake.store")

EVENT_INSERT = "INSERT INTO events(kind, data, at) VALUES (?, ?, ?)"
COUNTER_ADD = "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"


class SqliteTx:
    """A job's write transaction on the writer thread, as the writes shared with PostgreSQL see it
    (store/writes.py ``WriteTx``): events and counters are written at once (one writer: ids follow commits)."""

    __slots__ = ("conn", "q")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.q: Callable[..., sqlite3.Cursor] = conn.execute

    def one(self, sql: str, args: Any = ()) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: Any = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def event(self, kind: str, data: Json, now: float) -> None:
        self.conn.execute(EVENT_INSERT, (kind, dumps(data), now))

    def count(self, deltas: dict[str, int]) -> None:
        self.conn.executemany(COUNTER_ADD, [(k, v) for k, v in deltas.items() if v])


class WriterThread(GroupCommit[sqlite3.Connection]):
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_group: int = 4096,
                 commit_window_ms: float = 0.0, on_commit: Callable[[], None] | None = None,
                 on_rollback: Callable[[], None] | None = None, health: StorageHealth | None = None) -> None:
        super().__init__(window_ms=commit_window_ms, max_group=max_group, on_commit=on_commit,
                         thread_name="steplake-writer")
        self._connect = connect
        self._on_rollback = on_rollback
        self.health = health
        self._conn: sqlite3.Connection | None = None

    def _run(self) -> None:
        self._conn = self._connect()
        super()._run()
        self._conn.close()

    def _classify(self, e: BaseException) -> BaseException:
        """A disk-full error becomes ``StorageFullError`` (and marks ``health``); others stay as they are."""
        if not is_disk_full(e):
            return e
        err = storage_full_error(e)
        if self.health is not None:
            self.health.failed(err)
        return err

    def _run_group(self, jobs: list[Any]) -> list[Result]:
        conn = self._conn
        assert conn is not None
        results: list[Result] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _, _ in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    results.append((fn(conn), None))
                    conn.execute("RELEASE job")
                except BaseException as e:  # the job's own error: undo it alone
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    if self._on_rollback:  # caches may hold what was just undone
                        self._on_rollback()
                    results.append((None, self._classify(e)))
            conn.execute("COMMIT")
            self.commits += 1
            if self.health is not None:
                self.health.committed()
        except BaseException as e:  # the commit itself failed: every job fails
            failure = self._classify(e)
            if failure is e:
                log.exception("group commit failed")
            else:
                log.warning("group commit failed: %s", failure)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if self._on_rollback:
                self._on_rollback()
            results = [(None, failure) for _ in jobs]
        return results


__all__ = ["WriterThread", "SqliteTx", "EVENT_INSERT", "COUNTER_ADD"]
