"""PostgresStore: the scale-out Store. Several ``steplake serve`` processes (and trainers) share one
database: psycopg 3 with a connection pool (psycopg_pool), ``bytea`` token ids (the store/codec.py
encoding), group commit of step appends (store/postgres_tx.py), row locks for continuity and
``SKIP LOCKED`` leasing (store/postgres_writes.py, store/postgres_select.py), and ``LISTEN/NOTIFY``: a
server calls ``on_commit`` when it or another server commits, so long-polls wake at once.

``schema`` (or ``?schema=name`` in the URL) puts every table in one PostgreSQL schema (default ``public``);
tests use a fresh schema each.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.sql
from psycopg_pool import ConnectionPool

from ..availability import Backoff, StoreAvailability, is_unavailable
from ..errors import ConfigError, StorageFullError, StoreError
from ..records import BatchIn, Step
from .audit import PgAudit
from .base import AppendResult, BatchSelection, Json
from .dialect import POSTGRES
from .encode import index_existing_text
from .postgres_append import PgAppend
from .postgres_overview import PgOverview
from .postgres_reads import PgReads
from .postgres_schema import PG_MIGRATIONS, PG_TEXT_INDEX_VERSION
from .postgres_select import pg_select_groups
from .postgres_tx import GroupCommitter, Tx, TxEnv, lock_key, note_storage, run_tx
from .upgrade import record_version, upgrade_schema

log = logging.getLogger("steplake.store")
SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PENDING_DROPS: dict[tuple[str, str], None] = {}


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def split_schema(url: str) -> tuple[str, str | None]:
    """``postgresql://.../db?schema=name`` → (URL without it, ``name``): ``--db`` can pick a schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def connect_kwargs(schema: str) -> dict[str, Any]:
    return {"autocommit": True, "options": f"-c search_path={schema}", "application_name": "steplake"}


def pg_trigram_index(conn: psycopg.Connection[Any]) -> None:
    """A pg_trgm GIN index makes message search (ILIKE) an index lookup; without the extension (no right to
    create it) search still works, scanning the text table."""
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the migration intact
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                               " WHERE e.extname = 'pg_trgm'").fetchone()
            assert row is not None
            conn.execute(psycopg.sql.SQL("CREATE INDEX IF NOT EXISTS step_text_trgm ON step_text USING gin"
                                         " (text {}.gin_trgm_ops)").format(psycopg.sql.Identifier(row[0])))
    except psycopg.Error as e:
        log.warning("message search without a trigram index (pg_trgm unavailable: %s)", str(e).strip())


class PostgresStore(PgReads, PgAppend, PgAudit, PgOverview):
    def __init__(self, url: str, *, schema: str | None = None, drop_schema_on_close: bool = False,
                 pool_size: int = 8, commit_window_ms: float = 0.0, reward_weights: dict[str, float] | None = None
                 ) -> None:
        self.url, url_schema = split_schema(url)
        self.schema = schema or url_schema or "public"
        if not SCHEMA_RE.match(self.schema):
            raise ConfigError(f"invalid PostgreSQL schema name {self.schema!r}")
        self.drop_schema_on_close = drop_schema_on_close
        self.pool_size = pool_size
        self.commit_window_ms = commit_window_ms
        self.reward_weights: dict[str, float] = dict(reward_weights or {})  # component → weight (rewards config)
        self.on_commit: Callable[[], None] | None = None
        self._pool: ConnectionPool[Any] | None = None
        self._committer: GroupCommitter | None = None
        self._env: TxEnv | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._policy_key = lock_key("steplake-policy", self.schema)
        self._channel = f"steplake_{self.schema}"
        self.availability = StoreAvailability()  # outages seen by this process (availability.py)

    # -- lifecycle ----------------------------------------------------------------------------------
    def open(self) -> None:
        if self._pool is not None:
            return
        _PENDING_DROPS.pop((self.url, self.schema), None)
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                self._migrate(conn)
        except psycopg.OperationalError as e:
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.url)}: {e}") from None
        self._pool = ConnectionPool(self.url, min_size=1, max_size=max(2, self.pool_size),
                                    kwargs=connect_kwargs(self.schema), open=True, timeout=30,
                                    name=f"steplake-{self.schema}")
        self._env = TxEnv(self._pool, self.schema)
        self._committer = GroupCommitter(self._env, window_ms=self.commit_window_ms, on_commit=self._committed)
        self._committer.start()
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, name="steplake-pg-listen", daemon=True)
        self._listener.start()

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("steplake-migrate", self.schema),))
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
            version = upgrade_schema(conn.execute, PG_MIGRATIONS)
            if 0 < version < PG_TEXT_INDEX_VERSION:
                index_existing_text(conn, POSTGRES)
            if version < PG_TEXT_INDEX_VERSION:
                pg_trigram_index(conn)
            record_version(conn.execute, POSTGRES, len(PG_MIGRATIONS))

    def _committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def set_commit_hook(self, hook: Callable[[], None] | None) -> None:
        self.on_commit = hook

    def _listen(self) -> None:
        """Wake this process when any server commits (NOTIFY is sent at the end of every write). The
        listener is also the outage detector: its connection is the first to see a server restart."""
        backoff, lost = Backoff(first=0.2, cap=2.0), False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    backoff.reset()
                    if lost:
                        self._recovered()
                    lost = False
                    self._follow_notifies(conn)
            except Exception as e:  # lost the connection: retry with backoff; polling still wakes waiters
                if self._stop.is_set():
                    break
                lost = True
                if self.availability.down(e):
                    log.warning("PostgreSQL unreachable (%s); retrying", str(e).strip())
                self._stop.wait(backoff.next())

    def _follow_notifies(self, conn: psycopg.Connection[Any]) -> None:
        last_probe = 0.0
        while not self._stop.is_set():
            got = False
            for _ in conn.notifies(timeout=0.2, stop_after=1000):
                got = True
                break
            if got:
                self._committed()
            if not self.availability.available and time.monotonic() - last_probe > 1.0:
                last_probe = time.monotonic()  # a store call saw an outage the listener did not: probe
                if self._probe_pool():
                    self._recovered()

    def _probe_pool(self, timeout: float = 2.0) -> bool:
        pool = self._pool
        if pool is None:
            return False
        try:
            with pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception as e:
            if is_unavailable(e):
                self.availability.down(e)
            return False

    def _recovered(self) -> None:
        """The server answers again: drop pooled connections it closed, count the outage over, wake waiters."""
        pool = self._pool
        if pool is not None:
            try:
                pool.check()
            except Exception as e:  # the next call will find out again
                log.warning("PostgreSQL pool check after an outage failed: %s", e)
        if self.availability.up():
            log.warning("PostgreSQL answers again (outage of %s s)", self.availability.last_outage_seconds)
        self._committed()

    def close(self) -> None:
        self._stop.set()
        if self._committer is not None:
            self._committer.close()
            self._committer = None
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.drop_schema_on_close:
            # dropped at interpreter exit unless opened again (a test may close and reopen the same store)
            _PENDING_DROPS[(self.url, self.schema)] = None

    def drop_schema(self) -> None:
        """Remove every table of this store's schema (tests, ``steplake migrate`` targets)."""
        _PENDING_DROPS.pop((self.url, self.schema), None)
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def storage_problem(self) -> str | None:
        """Why writes fail now (disk full), else None (``store.health``)."""
        return self._env.health.problem() if self._env is not None else None

    def ping(self) -> bool:
        """The database answers now (during an outage: a fresh connection, refused at once while down)."""
        if self._pool is None or self._committer is None:
            return False
        if self.availability.available:
            return self._probe_pool()
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception as e:
            self.availability.down(e)
            return False
        self._recovered()
        return True

    def _tx(self, fn: Callable[[Tx], Any], keys: Sequence[str] = ()) -> Any:
        """Run a write in its own transaction; ``keys``: trajectory / group ids it changes (locked first)."""
        if self._env is None:
            raise StoreError("store is not open")
        try:
            res = run_tx(self._env, fn, keys)
        except StorageFullError as e:
            note_storage(self._env.health, [e])
            raise
        note_storage(self._env.health, [None])
        self._committed()
        return res

    def _traj_keys(self, trajectory_id: str | None, step_id: str | None = None) -> list[str]:
        """Lock keys of a trajectory and its group (neither ever changes, so reading them unlocked is safe)."""
        if step_id is not None:
            row = self._one("SELECT trajectory_id, group_id FROM steps WHERE step_id = %s", (step_id,))
        else:
            row = self._one("SELECT trajectory_id, group_id FROM trajectories WHERE trajectory_id = %s",
                            (trajectory_id,))
        return [] if row is None else [row[0], row[1]]

    def _group(self) -> GroupCommitter:
        if self._committer is None:
            raise StoreError("store is not open")
        return self._committer

    # -- steps --------------------------------------------------------------------------------------
    def append_steps(self, steps: Sequence[Step]) -> AppendResult:
        steps = _with_step_ids(steps)
        return self._group().call(lambda tx: self._w_append(tx, steps), _step_keys(steps))  # type: ignore[no-any-return]

    def submit_steps(self, steps: Sequence[Step], callback: Callable[[BaseException | None], None] | None = None
                     ) -> None:
        steps = _with_step_ids(steps)
        self._group().submit_nowait(lambda tx: self._w_append(tx, steps), callback, _step_keys(steps))

    # -- batches and policy ------------------------------------------------------------------------------------
    def select_batch(self, request: BatchIn) -> BatchSelection:
        return self._tx(lambda tx: pg_select_groups(tx, request))  # type: ignore[no-any-return]

    # -- stats and keys -------------------------------------------------------------------------------------------
    def _store_info(self) -> Json:
        return {"backend": "postgresql", "url": redact(self.url), "schema": self.schema,
                "commits": self._committer.commits if self._committer else 0}


def _step_keys(steps: Sequence[Step]) -> list[str]:
    """Lock keys of an append: its trajectories and the groups it may create or count into."""
    return list({k for s in steps for k in (s.trajectory_id, s.group_id or s.trajectory_id)})


def _with_step_ids(steps: Sequence[Step]) -> list[Step]:
    """Give id-less steps their id before queueing, so a retried transaction stores each step once."""
    return [s if s.step_id else s.model_copy(update={"step_id": f"st_{uuid.uuid4().hex}"}) for s in steps]


@atexit.register
def _drop_pending_schemas() -> None:
    for url, schema in list(_PENDING_DROPS):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except Exception:  # the server may be gone at exit; nothing to clean then
            pass
    _PENDING_DROPS.clear()


__all__ = ["PostgresStore", "redact", "lock_key", "connect_kwargs", "split_schema"]
