"""Write transactions of PostgresStore: the ``Tx`` handle every write runs with, the end-of-transaction
step that makes events readable in commit order across servers, and the group-commit thread.

Event order across servers: an events table with a sequence alone is not enough (a transaction may take
id 9, another id 10 and commit first; a reader that saw 10 would skip 9 forever). Every write transaction
that has events or counter deltas takes one advisory transaction lock *last*, then allocates its event
ids and commits; the lock is released only after the commit is visible, so ids are handed out in commit
order and ``read_events(after)`` never skips one. The same step sends ``NOTIFY`` so servers listening on
the database wake their long-polls (delivered at commit).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import errors as pgerr

from ..availability import is_unavailable
from ..errors import ConflictError, SteplakeError, StoreError, StoreUnavailableError, ValidationError
from .base import Json
from .codec import dumps
from .commit import GroupCommit, Result
from .health import StorageHealth, is_disk_full, storage_full_error

log = logging.getLogger("steplake.store")

TRANSIENT = (pgerr.DeadlockDetected, pgerr.SerializationFailure, pgerr.LockNotAvailable)
RETRIES = 6


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key."""
    return int.from_bytes(hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest(), "little", signed=True)


class TxEnv:
    """What every write transaction of one store needs: the pool, the events lock, the NOTIFY channel."""

    def __init__(self, pool: Any, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.events_key = lock_key("steplake-events", schema)
        self.channel = f"steplake_{schema}"
        self.health = StorageHealth()  # disk full: marked by failed writes, cleared by the next commit


class Tx:
    """One open write transaction: the connection plus the events and counter deltas it will publish."""

    def __init__(self, conn: psycopg.Connection[Any], env: TxEnv) -> None:
        self.conn = conn
        self.env = env
        self.events: list[tuple[str, bytes, float]] = []
        self.counts: dict[str, int] = {}

    def q(self, sql: str, args: Any = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql, args)

    def one(self, sql: str, args: Any = ()) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: Any = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def lock(self, ids: Iterable[str]) -> None:
        """Take the advisory locks of these trajectories / groups, in one global order (no deadlocks between
        writers that lock this way first; locks already held are taken again at once)."""
        keys = sorted({lock_key("steplake-t", self.env.schema, i) for i in ids})
        if keys:
            self.q("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) s",
                   (keys,))

    def event(self, kind: str, data: Json, now: float) -> None:
        self.events.append((kind, dumps(data), now))

    def count(self, deltas: dict[str, int]) -> None:
        for k, v in deltas.items():
            if v:
                self.counts[k] = self.counts.get(k, 0) + v

    def mark(self) -> tuple[int, dict[str, int]]:
        return len(self.events), dict(self.counts)

    def reset(self, mark: tuple[int, dict[str, int]]) -> None:
        del self.events[mark[0]:]
        self.counts = mark[1]


def finish(tx: Tx) -> None:
    """Publish the transaction's counters and events (ids in commit order) and notify listeners."""
    if not tx.events and not tx.counts:
        return
    tx.q("SELECT pg_advisory_xact_lock(%s)", (tx.env.events_key,))
    if tx.counts:
        names = sorted(tx.counts)
        tx.q("INSERT INTO counters(name, value) SELECT * FROM unnest(%s::text[], %s::bigint[])"
             " ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
             (names, [tx.counts[n] for n in names]))
    if tx.events:
        tx.q("INSERT INTO events(kind, data, at) SELECT k, d, a FROM unnest(%s::text[], %s::bytea[], %s::float8[])"
             " WITH ORDINALITY AS u(k, d, a, o) ORDER BY o",
             ([e[0] for e in tx.events], [e[1] for e in tx.events], [e[2] for e in tx.events]))
    tx.q("SELECT pg_notify(%s, '')", (tx.env.channel,))


def translate(e: BaseException) -> BaseException:
    """Database errors a caller can cause become the matching SteplakeError; the rest stay StoreError."""
    if isinstance(e, SteplakeError) or not isinstance(e, psycopg.Error):
        return e
    if is_disk_full(e):
        return storage_full_error(e)
    if isinstance(e, pgerr.UniqueViolation):
        return ConflictError(f"conflicts with a stored record: {e.diag.message_detail or e}", code="conflict")
    if isinstance(e, psycopg.DataError):
        return ValidationError(f"value not storable: {e}", code="invalid_value")
    if is_unavailable(e):
        err = StoreUnavailableError(f"database unavailable, retry shortly: {str(e).strip()}")
        err.__cause__ = e
        return err
    return StoreError(f"database error: {e}")


def run_tx(env: TxEnv, fn: Callable[[Tx], Any], keys: Iterable[str] = ()) -> Any:
    """Run ``fn`` in its own transaction (after locking ``keys``), retrying on deadlock / serialization failure."""
    keys = list(keys)
    for attempt in range(RETRIES):
        try:
            with env.pool.connection() as conn, conn.transaction():
                tx = Tx(conn, env)
                tx.lock(keys)
                res = fn(tx)
                finish(tx)
            return res
        except TRANSIENT:
            if attempt == RETRIES - 1:
                raise StoreError("transaction kept conflicting with concurrent writers; try again") from None
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        except psycopg.Error as e:
            raise translate(e) from e
    raise AssertionError("unreachable")


def note_storage(health: StorageHealth, errors: list[BaseException | None]) -> None:
    """Mark the store full when a write failed for lack of space, healthy again when one committed."""
    full = next((e for e in errors if e is not None and is_disk_full(e)), None)
    if full is not None:
        health.failed(full)
    elif any(e is None for e in errors):
        health.committed()


class _Retry(Exception):
    pass


class GroupCommitter(GroupCommit[Tx]):
    """The group-commit thread (store/commit.py) of a PostgresStore: a group runs in one transaction, each job
    in a savepoint, after locking every job's keys; a deadlock with another server redoes each job alone."""

    closed_error = StoreError

    def __init__(self, env: TxEnv, *, window_ms: float = 0.0, max_group: int = 1024,
                 on_commit: Callable[[], None] | None = None) -> None:
        super().__init__(window_ms=window_ms, max_group=max_group, on_commit=on_commit,
                         thread_name="steplake-pg-committer")
        self._env = env

    def _run_group(self, jobs: list[Any]) -> list[Result]:
        if len(jobs) == 1:
            return [self._run_alone(jobs[0][0], jobs[0][3])]
        results: list[Result] = []
        try:
            with self._env.pool.connection() as conn, conn.transaction():
                tx = Tx(conn, self._env)
                tx.lock(k for job in jobs for k in job[3])
                for fn, _, _, _ in jobs:
                    mark = tx.mark()
                    try:
                        with conn.transaction():
                            results.append((fn(tx), None))
                    except TRANSIENT:
                        raise _Retry() from None
                    except Exception as e:  # this job's own error: its savepoint is rolled back
                        tx.reset(mark)
                        results.append((None, translate(e)))
                finish(tx)
            self.commits += 1
            return results
        except (_Retry, *TRANSIENT):  # a deadlock with another server: redo each job in its own transaction
            return [self._run_alone(fn, keys) for fn, _, _, keys in jobs]
        except Exception as e:
            log.exception("group commit failed")
            err = translate(e)
            return [(None, err) for _ in jobs]

    def _run_alone(self, fn: Callable[[Tx], Any], keys: Iterable[str]) -> Result:
        try:
            res = run_tx(self._env, fn, keys)
            self.commits += 1
            return res, None
        except Exception as e:
            return None, translate(e)

    def _deliver(self, jobs: list[Any], results: list[Result]) -> None:
        note_storage(self._env.health, [err for _, err in results])
        super()._deliver(jobs, results)


__all__ = ["Tx", "TxEnv", "lock_key", "finish", "run_tx", "translate", "GroupCommitter", "TRANSIENT", "note_storage"]
