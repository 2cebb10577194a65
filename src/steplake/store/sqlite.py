"""SqliteStore: the embedded default Store. One file, WAL, one writer thread with group commit
(store/writer.py), pooled per-thread readers. ``synchronous=FULL``: a committed write survives a crash of
the process and of the machine."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..records import BatchIn, Step
from .audit import SqliteAudit
from .base import AppendResult, BatchSelection, Json, Page
from .dialect import SQLITE
from .encode import encode_steps, index_existing_text
from .filters import DENSE_TEXT_SQL, like_pattern, text_search, traj_page_sql, traj_where
from .health import StorageHealth, folder_free_bytes
from .reads import StoreReads
from .rows import TRAJ_COLS
from .schema import MIGRATIONS, TEXT_INDEX_VERSION
from .sqlite_overview import SqliteOverview
from .sqlite_select import select_groups
from .sqlite_writes import SqliteWrites, TrajState
from .upgrade import record_version, upgrade_schema
from .writer import SqliteTx, WriterThread

DENSE_MATCHES = 10_000  # search terms in at least this many steps walk the trajectories (see list_trajectories)
DENSE_BUDGET_S = 0.05  # ... for at most this long before falling back to collecting the matches
DENSE_CHECK_EVERY = 20_000  # SQLite VM steps between two looks at the clock during that walk


class SqliteStore(StoreReads, SqliteWrites, SqliteAudit, SqliteOverview):
    dialect = SQLITE

    def __init__(self, path: str | Path, *, commit_window_ms: float = 0.0, synchronous: str = "FULL",
                 reward_weights: dict[str, float] | None = None) -> None:
        self.path = str(path)
        self.commit_window_ms = commit_window_ms
        self.synchronous = synchronous
        self._local = threading.local()
        self._traj: dict[str, TrajState] = {}
        self._groups_known: set[str] = set()
        self._policy_version = 0
        self.reward_weights: dict[str, float] = dict(reward_weights or {})  # component → weight (rewards config)
        self.on_commit: Callable[[], None] | None = None
        self._writer: Any = None
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.health = StorageHealth(folder_free_bytes(self.path))  # disk full (store/health.py)

    # -- connections --------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _conn(self) -> AbstractContextManager[sqlite3.Connection]:
        return nullcontext(self._reader())

    def _all(self, sql: str, args: Any = ()) -> list[Any]:  # store/reads.py's, without the context manager
        return self._reader().execute(sql, args).fetchall()

    def _one(self, sql: str, args: Any = ()) -> Any:
        return self._reader().execute(sql, args).fetchone()

    def _store_info(self) -> Json:
        return {"backend": "sqlite", "path": self.path, "commits": self._writer.commits if self._writer else 0}

    def open(self) -> None:
        if self._writer is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            self._migrate(conn)
            row = conn.execute("SELECT MAX(version) FROM policy").fetchone()
            self._policy_version = row[0] or 0
        finally:
            conn.close()
        self._writer = WriterThread(self._connect, commit_window_ms=self.commit_window_ms,
                                    on_commit=self._committed, on_rollback=self._forget, health=self.health)
        self._writer.start()

    def _forget(self) -> None:
        self._traj.clear()
        self._groups_known.clear()

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def set_commit_hook(self, hook: Callable[[], None] | None) -> None:
        self.on_commit = hook

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = upgrade_schema(conn.execute, MIGRATIONS, lambda stmt: _migration_step(conn, stmt))
            if 0 < version < TEXT_INDEX_VERSION:
                index_existing_text(conn, SQLITE)
            record_version(conn.execute, SQLITE, len(MIGRATIONS))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._lock:
            for c in self._readers:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._readers.clear()
        self._local = threading.local()

    def storage_problem(self) -> str | None:
        """Why writes fail now (disk full), else None."""
        return self.health.problem()

    def ping(self) -> bool:
        try:
            self._reader().execute("SELECT 1").fetchone()
            return self._writer is not None
        except sqlite3.Error:
            return False

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._writer is None:
            raise StoreError("store is not open")
        return self._writer.call(fn)

    def _tx(self, fn: Callable[[SqliteTx], Any], keys: Sequence[str] = ()) -> Any:
        """A write on the shared transaction handle (store/writes.py); one writer, so ``keys`` need no locks."""
        return self._write(lambda c: fn(SqliteTx(c)))

    # -- steps --------------------------------------------------------------------------------------
    def append_steps(self, steps: Sequence[Step]) -> AppendResult:
        encoded = encode_steps(steps)  # in the caller's thread, overlapping the writer's SQLite work
        return self._write(lambda c: self._w_append(c, steps, encoded))  # type: ignore[no-any-return]

    def submit_steps(self, steps: Sequence[Step], callback: Callable[[BaseException | None], None] | None = None
                     ) -> None:
        if self._writer is None:
            raise StoreError("store is not open")
        self._writer.submit_nowait(lambda c: self._w_append(c, steps), callback)

    # -- trajectories and groups ------------------------------------------------------------------------
    def list_trajectories(self, filters: Json, cursor: str | None, limit: int) -> Page:
        conn = self._reader()
        q = str(filters.get("q") or "")
        rows = None
        if len(q) >= 3 and q.isascii() and "\x00" not in q and self._common_text(conn, q):
            where, args = traj_where({**filters, "q": None})
            rows = self._page_rows(conn, [*where, DENSE_TEXT_SQL], [*args, like_pattern(q)], filters, cursor, limit,
                                   budget_s=DENSE_BUDGET_S)
        if rows is None:  # the usual plan; also when the walk above found its matches too sparse
            where, args = traj_where(filters)
            rows = self._page_rows(conn, where, args, filters, cursor, limit)
        assert rows is not None
        return self._traj_rows_page(rows, limit)

    @staticmethod
    def _common_text(conn: sqlite3.Connection, q: str) -> bool:
        """Whether at least ``DENSE_MATCHES`` steps contain ``q`` (a bounded count on the trigram index)."""
        sub, arg = text_search(q, "?")
        row = conn.execute(f"SELECT count(*) FROM ({sub} LIMIT {DENSE_MATCHES})", (arg,)).fetchone()
        return bool(row[0] >= DENSE_MATCHES)

    @staticmethod
    def _page_rows(conn: sqlite3.Connection, where: list[str], args: list[Any], filters: Json, cursor: str | None,
                   limit: int, budget_s: float | None = None) -> list[Any] | None:
        """One keyset page of trajectories; with ``budget_s``, None when the query ran out of time."""
        sql, args = traj_page_sql(where, args, filters, cursor, limit, TRAJ_COLS)
        if budget_s is None:
            return conn.execute(sql, args).fetchall()
        deadline = time.monotonic() + budget_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), DENSE_CHECK_EVERY)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "interrupt" not in str(e):
                raise
            return None
        finally:
            conn.set_progress_handler(None, 0)

    # -- batches and policy ------------------------------------------------------------------------------------
    def select_batch(self, request: BatchIn) -> BatchSelection:
        return self._write(lambda c: select_groups(c, request, self._policy_version))  # type: ignore[no-any-return]


def _migration_step(conn: sqlite3.Connection, stmt: str) -> None:
    """One migration statement; an ``ADD COLUMN`` whose column exists already is done (SQLite has no
    ``ADD COLUMN IF NOT EXISTS``), so a migration can run again over a database that has it."""
    try:
        conn.execute(stmt)
    except sqlite3.OperationalError as e:
        if not ("ADD COLUMN" in stmt.upper() and "duplicate column" in str(e)):
            raise


__all__ = ["SqliteStore"]
