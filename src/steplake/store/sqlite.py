"""SqliteStore: the embedded default Store. One file, WAL, one writer thread with group commit
(store/writer.py), pooled per-thread readers. ``synchronous=FULL``: a committed write survives a crash of
the process and of the machine."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, StoreError
from ..records import BatchIn, CurationIn, FeedbackIn, RewardIn, Step
from . import claims
from .audit import SqliteAudit
from .base import AppendResult, BatchSelection, Json, KeyRecord, Page
from .claims import ClaimKey
from .codec import bytes_to_floats, bytes_to_ids, dumps, loads
from .encode import backfill_text, encode_steps
from .filters import (
    DENSE_TEXT_SQL,
    like_pattern,
    parse_cursor,
    step_page_sql,
    text_search,
    traj_page_sql,
    traj_where,
)
from .health import StorageHealth, folder_free_bytes
from .keys import KEY_COLUMNS, check_binding, key_record
from .schema import MIGRATIONS, SCHEMA_VERSION, TEXT_INDEX_VERSION
from .selection import select_groups
from .sqlite_overview import SqliteOverview
from .sqlite_writes import SqliteWrites, TrajState, hash_secret

STEP_META_COLS = ("seq, step_id, trajectory_id, group_id, step_index, channel, policy_version, continuity,"
                  " parent_step_id, shared_prefix_len, prompt_len, response_len, token_source, finish_reason, model,"
                  " reward, latency_ms, created_at, quality, trainable, tags, note, reviewer, curated_at, doc")
STEP_COLS = STEP_META_COLS + ", prompt_tail, response_ids, response_logprobs"
TRAJ_COLS = ("seq, trajectory_id, group_id, channel, status, reward, reward_components, n_steps, metadata, created_at,"
             " updated_at, completed_at, quality, trainable, tags, note, reviewer, curated_at, n_tokens, n_realigned,"
             " n_fork, min_policy, max_policy, last_finish_reason")
GROUP_COLS = ("group_id, channel, size, n_trajectories, n_complete, n_abandoned, status, metadata, created_at,"
              " updated_at, ready_at, lease_batch_id, lease_expires_at, consumed_at")


def _curation(row: Sequence[Any], at: int) -> Json:
    return {"quality": row[at], "trainable": bool(row[at + 1]), "tags": loads(row[at + 2]) or [],
            "note": row[at + 3], "reviewer": row[at + 4], "updated_at": row[at + 5]}


def step_meta(row: Sequence[Any]) -> Json:
    doc: Json = loads(row[24])  # type: ignore[assignment]
    out: Json = {
        "step_id": row[1], "trajectory_id": row[2], "group_id": row[3], "step_index": row[4], "channel": row[5],
        "policy_version": row[6], "continuity": row[7], "parent_step_id": row[8], "shared_prefix_len": row[9],
        "prompt_len": row[10], "response_len": row[11], "token_source": row[12], "finish_reason": row[13],
        "model": row[14], "reward": row[15], "latency_ms": row[16], "created_at": row[17],
    }
    out.update(doc)
    out["curation"] = _curation(row, 18)
    return out


def traj_dict(row: Sequence[Any]) -> Json:
    return {
        "trajectory_id": row[1], "group_id": row[2], "channel": row[3], "status": row[4], "reward": row[5],
        "reward_components": loads(row[6]) or {}, "n_steps": row[7], "metadata": loads(row[8]) or {},
        "created_at": row[9], "updated_at": row[10], "completed_at": row[11], "curation": _curation(row, 12),
        "n_tokens": row[18], "n_realigned": row[19], "n_fork": row[20],
        "policy_versions": [row[21], row[22]] if row[21] is not None else [], "last_finish_reason": row[23],
    }


def group_dict(row: Sequence[Any]) -> Json:
    return {"group_id": row[0], "channel": row[1], "size": row[2], "n_trajectories": row[3], "n_complete": row[4],
            "n_abandoned": row[5], "status": row[6], "metadata": loads(row[7]) or {}, "created_at": row[8],
            "updated_at": row[9], "ready_at": row[10], "lease_batch_id": row[11], "lease_expires_at": row[12],
            "consumed_at": row[13]}


def index_existing_text(conn: sqlite3.Connection, chunk: int = 5000) -> None:
    """Fill the message-search index from steps stored before it existed (one pass, inside the migration)."""
    def insert(rows: list[tuple[int, str, str]]) -> None:
        conn.executemany("INSERT INTO step_text(rowid, trajectory_id, text) VALUES (?, ?, ?)", rows)
    backfill_text(lambda after: conn.execute("SELECT seq, trajectory_id, doc, continuity FROM steps WHERE seq > ?"
                                             " ORDER BY seq LIMIT ?", (after, chunk)).fetchall(), insert)


DENSE_MATCHES = 10_000  # search terms in at least this many steps walk the trajectories (see list_trajectories)
DENSE_BUDGET_S = 0.05  # ... for at most this long before falling back to collecting the matches
DENSE_CHECK_EVERY = 20_000  # SQLite VM steps between two looks at the clock during that walk


class SqliteStore(SqliteWrites, SqliteAudit, SqliteOverview):
    def __init__(self, path: str | Path, *, commit_window_ms: float = 0.0, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.commit_window_ms = commit_window_ms
        self.synchronous = synchronous
        self._local = threading.local()
        self._traj: dict[str, TrajState] = {}
        self._groups_known: set[str] = set()
        self._policy_version = 0
        self.reward_weights: dict[str, float] = {}
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

    def open(self) -> None:
        from .writer import WriterThread

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

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"database schema v{version} is newer than this steplake (v{SCHEMA_VERSION})")
            for sql in MIGRATIONS[version:]:
                for stmt in sql.split(";"):
                    if stmt.strip():
                        _migration_step(conn, stmt)
            if 0 < version < TEXT_INDEX_VERSION:
                index_existing_text(conn)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
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

    # -- steps --------------------------------------------------------------------------------------
    def append_steps(self, steps: Sequence[Step]) -> AppendResult:
        encoded = encode_steps(steps)  # in the caller's thread, overlapping the writer's SQLite work
        return self._write(lambda c: self._w_append(c, steps, encoded))  # type: ignore[no-any-return]

    def submit_steps(self, steps: Sequence[Step], callback: Callable[[BaseException | None], None] | None = None
                     ) -> None:
        if self._writer is None:
            raise StoreError("store is not open")
        self._writer.submit_nowait(lambda c: self._w_append(c, steps), callback)

    def _chain(self, conn: sqlite3.Connection, tid: str, max_index: int | None) -> list[tuple[Any, ...]]:
        sql = ("SELECT step_id, step_index, parent_step_id, shared_prefix_len, prompt_tail, response_ids"
               " FROM steps WHERE trajectory_id = ?")
        args: list[Any] = [tid]
        if max_index is not None:
            sql += " AND step_index <= ?"
            args.append(max_index)
        return conn.execute(sql + " ORDER BY step_index", args).fetchall()

    @staticmethod
    def _rebuild(rows: Sequence[Sequence[Any]]) -> dict[str, tuple[bytes, bytes]]:
        """step_id → (full prompt bytes, response bytes), resolving prefix sharing along parents."""
        out: dict[str, tuple[bytes, bytes]] = {}
        for step_id, _, parent, shared, tail, resp in rows:
            prefix = b""
            if shared and parent is not None:
                pp, pr = out[parent]
                prefix = (pp + pr)[: shared * 4]
            out[step_id] = (prefix + bytes(tail), bytes(resp))
        return out

    def _full_seq_for(self, conn: sqlite3.Connection, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        rows = self._chain(conn, trajectory_id, None if below_index is None else below_index - 1)
        if not rows:
            return -1, None, None
        full = self._rebuild(rows)
        last = rows[-1]
        p, r = full[last[0]]
        return last[1], last[0], p + r

    def _load_full(self, conn: sqlite3.Connection, step_id: str) -> Json | None:
        row = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE step_id = ?", (step_id,)).fetchone()
        if row is None:
            return None
        return self._steps_with_ids(conn, [row])[0]

    def _steps_with_ids(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[Json]:
        """Full step dicts for rows selected with STEP_COLS (any trajectories, any order)."""
        need: dict[str, int] = {}
        for r in rows:
            need[r[2]] = max(need.get(r[2], -1), r[4])
        full: dict[str, tuple[bytes, bytes]] = {}
        for tid, max_index in need.items():
            full.update(self._rebuild(self._chain(conn, tid, max_index)))
        out = []
        for r in rows:
            d = step_meta(r)
            p, resp = full[r[1]]
            d["prompt_ids"] = bytes_to_ids(p)
            d["response_ids"] = bytes_to_ids(resp)
            d["response_logprobs"] = bytes_to_floats(r[27])
            out.append(d)
        return out

    def get_step(self, step_id: str) -> Json | None:
        return self._load_full(self._reader(), step_id)

    def steps_of(self, trajectory_ids: Sequence[str]) -> dict[str, list[Json]]:
        """Full steps of many trajectories, each list in step_index order."""
        conn = self._reader()
        out: dict[str, list[Json]] = {t: [] for t in trajectory_ids}
        for i in range(0, len(trajectory_ids), 500):
            chunk = list(trajectory_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE trajectory_id IN ({marks})"
                                " ORDER BY trajectory_id, step_index", chunk).fetchall()
            by_t: dict[str, list[Any]] = {}
            for r in rows:
                by_t.setdefault(r[2], []).append(r)
            for tid, trows in by_t.items():
                full = self._rebuild([(r[1], r[4], r[8], r[9], r[25], r[26]) for r in trows])
                for r in trows:
                    d = step_meta(r)
                    p, resp = full[r[1]]
                    d["prompt_ids"] = bytes_to_ids(p)
                    d["response_ids"] = bytes_to_ids(resp)
                    d["response_logprobs"] = bytes_to_floats(r[27])
                    out[tid].append(d)
        return out

    def list_steps(self, filters: Json, cursor: str | None, limit: int, with_ids: bool = True) -> Page:
        conn = self._reader()
        sql, args = step_page_sql(filters, cursor, limit, STEP_COLS if with_ids else STEP_META_COLS)
        rows = conn.execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        items = self._steps_with_ids(conn, rows) if with_ids else [step_meta(r) for r in rows]
        return Page(items, str(rows[-1][0]) if more and rows else None)

    # -- trajectories and groups ------------------------------------------------------------------------
    def create_trajectory(self, trajectory_id: str, group_id: str | None, group_size: int | None,
                          channel: str | None, metadata: Json) -> Json:
        self._write(lambda c: self._w_create_trajectory(c, trajectory_id, group_id, group_size, channel, metadata))
        t = self.get_trajectory(trajectory_id, with_steps=False)
        assert t is not None
        return t

    def create_group(self, group_id: str, n: int, channel: str | None, metadata: Json,
                     trajectory_ids: Sequence[str]) -> Json:
        def job(c: sqlite3.Connection) -> None:
            now = time.time()
            if c.execute("SELECT 1 FROM groups WHERE group_id = ?", (group_id,)).fetchone():
                from ..errors import ConflictError
                raise ConflictError(f"group {group_id!r} already exists", code="group_exists")
            self._ensure_group(c, group_id, channel or "train", n, metadata, now)
            for tid in trajectory_ids:
                self._w_create_trajectory(c, tid, group_id, None, channel, dict(metadata))
        self._write(job)
        g = self.get_group(group_id)
        assert g is not None
        return g

    def complete_trajectory(self, trajectory_id: str, reward: float | None, metadata: Json | None = None) -> Json:
        self._write(lambda c: self._w_complete(c, trajectory_id, reward, metadata))
        t = self.get_trajectory(trajectory_id, with_steps=False)
        assert t is not None
        return t

    def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json | None:
        conn = self._reader()
        row = conn.execute(f"SELECT {TRAJ_COLS} FROM trajectories WHERE trajectory_id = ?", (trajectory_id,)).fetchone()
        if row is None:
            return None
        t = traj_dict(row)
        if with_steps:
            t["steps"] = self.steps_of([trajectory_id])[trajectory_id]
        return t

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
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([traj_dict(r) for r in rows], str(rows[-1][0]) if more and rows else None)

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

    def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]:
        where, args = traj_where(filters)
        sql = "SELECT trajectory_id FROM trajectories" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self._reader().execute(sql + " LIMIT ?", [*args, limit]).fetchall()]

    def delete_trajectory(self, trajectory_id: str) -> bool:
        return bool(self._write(lambda c: self._w_delete(c, trajectory_id)))

    def get_group(self, group_id: str) -> Json | None:
        row = self._reader().execute(f"SELECT {GROUP_COLS} FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        if row is None:
            return None
        g = group_dict(row)
        g["trajectory_ids"] = [r[0] for r in self._reader().execute(
            "SELECT trajectory_id FROM trajectories WHERE group_id = ? ORDER BY seq", (group_id,))]
        return g

    def list_groups(self, filters: Json, cursor: str | None, limit: int) -> Page:
        where, args = [], []
        for col in ("channel", "status"):
            if filters.get(col) is not None:
                where.append(f"{col} = ?")
                args.append(filters[col])
        if cursor is not None:
            where.append("rowid < ?")
            args.append(parse_cursor(cursor))
        sql = f"SELECT rowid, {GROUP_COLS} FROM groups" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._reader().execute(sql + " ORDER BY rowid DESC LIMIT ?", [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([group_dict(r[1:]) for r in rows], str(rows[-1][0]) if more and rows else None)

    def sweep_idle(self, idle_timeout: float, now: float | None = None) -> int:
        t = time.time() if now is None else now
        conn = self._reader()
        if conn.execute("SELECT 1 FROM trajectories WHERE status = 'open' AND updated_at < ? LIMIT 1",
                        (t - idle_timeout,)).fetchone() is None:
            return 0
        return int(self._write(lambda c: self._w_sweep(c, idle_timeout, t)))

    def find_open_trajectory(self, exchange_hash: str) -> str | None:
        row = self._reader().execute("SELECT trajectory_id FROM trajectories WHERE exchange_hash = ? AND status = 'open'"
                                     " ORDER BY updated_at DESC LIMIT 1", (exchange_hash,)).fetchone()
        return row[0] if row else None

    # -- rewards, curation, feedback ----------------------------------------------------------------------
    def add_reward(self, reward: RewardIn) -> Json:
        return self._write(lambda c: self._w_add_reward(c, reward))  # type: ignore[no-any-return]

    def claim_rewards(self, keys: Sequence[ClaimKey], owner: str, stale_after: float,
                      now: float | None = None) -> list[ClaimKey]:
        t = time.time() if now is None else now
        return self._write(lambda c: claims.claim(c.execute, "?", keys, owner, stale_after, t))  # type: ignore[no-any-return]

    def settle_rewards(self, keys: Sequence[ClaimKey], owner: str, done: bool) -> None:
        self._write(lambda c: claims.settle(c.execute, "?", keys, owner, done, time.time()))

    def list_rewards(self, trajectory_id: str | None = None, step_id: str | None = None) -> list[Json]:
        col, val = ("step_id", step_id) if step_id else ("trajectory_id", trajectory_id)
        rows = self._reader().execute("SELECT id, trajectory_id, step_id, name, value, version, details, created_at"
                                      f" FROM rewards WHERE {col} = ? ORDER BY id", (val,)).fetchall()
        return [{"id": r[0], "trajectory_id": r[1], "step_id": r[2], "name": r[3], "value": r[4], "version": r[5],
                 "details": loads(r[6]), "created_at": r[7]} for r in rows]

    def curate(self, change: CurationIn) -> int:
        tids = list(change.trajectory_ids or [])
        if change.filter is not None:
            tids += self.trajectory_ids_matching(change.filter.model_dump(exclude_none=True))
        return int(self._write(lambda c: self._w_curate(c, change, list(dict.fromkeys(tids)))))

    def curation_history(self, target_id: str) -> list[Json]:
        rows = self._reader().execute("SELECT id, target_kind, target_id, change, before, reviewer, at FROM"
                                      " curation_history WHERE target_id = ? ORDER BY id", (target_id,)).fetchall()
        return [{"id": r[0], "target_kind": r[1], "target_id": r[2], "change": loads(r[3]), "before": loads(r[4]),
                 "reviewer": r[5], "at": r[6]} for r in rows]

    def add_feedback(self, feedback: FeedbackIn) -> Json:
        return self._write(lambda c: self._w_feedback(c, feedback))  # type: ignore[no-any-return]

    def list_feedback(self, filters: Json) -> list[Json]:
        where, args = [], []
        for col in ("trajectory_id", "step_id", "kind"):
            if filters.get(col) is not None:
                where.append(f"{col} = ?")
                args.append(filters[col])
        sql = "SELECT id, trajectory_id, step_id, kind, value, comment, author, created_at FROM feedback"
        rows = self._reader().execute(sql + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT 10000",
                                      args).fetchall()
        return [{"id": r[0], "trajectory_id": r[1], "step_id": r[2], "kind": r[3], "value": loads(r[4]),
                 "comment": r[5], "author": r[6], "created_at": r[7]} for r in rows]

    # -- batches and policy ------------------------------------------------------------------------------------
    def select_batch(self, request: BatchIn) -> BatchSelection:
        return self._write(lambda c: select_groups(self, c, request))  # type: ignore[no-any-return]

    def record_batch_details(self, batch_id: str, details: Json) -> None:
        self._write(lambda c: c.execute("UPDATE batches SET details = ? WHERE batch_id = ?", (dumps(details), batch_id)))

    def ack_batch(self, batch_id: str) -> Json:
        def job(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT acked_at FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
            if row[0] is not None:
                return
            now = time.time()
            c.execute("UPDATE batches SET acked_at = ? WHERE batch_id = ?", (now, batch_id))
            gids = [r[0] for r in c.execute("SELECT group_id FROM groups WHERE lease_batch_id = ? AND status = 'leased'",
                                            (batch_id,))]
            c.execute("UPDATE groups SET status = 'consumed', consumed_at = ? WHERE lease_batch_id = ?"
                      " AND status = 'leased'", (now, batch_id))
            self._event(c, "batch", {"batch_id": batch_id, "status": "consumed", "group_ids": gids}, now)
        self._write(job)
        b = self.get_batch(batch_id)
        assert b is not None
        return b

    def get_batch(self, batch_id: str) -> Json | None:
        r = self._reader().execute("SELECT batch_id, channel, recipe, layout, request, group_ids, trajectory_ids,"
                                   " details, policy_version, created_at, lease_expires_at, acked_at FROM batches"
                                   " WHERE batch_id = ?", (batch_id,)).fetchone()
        if r is None:
            return None
        return {"batch_id": r[0], "channel": r[1], "recipe": r[2], "layout": r[3], "request": loads(r[4]),
                "group_ids": loads(r[5]), "trajectory_ids": loads(r[6]), "details": loads(r[7]),
                "policy_version": r[8], "created_at": r[9], "lease_expires_at": r[10], "acked_at": r[11],
                "status": "consumed" if r[11] else ("leased" if r[10] > time.time() else "expired")}

    def publish_policy(self, version: int, weights_path: str | None, note: str | None) -> Json:
        return self._write(lambda c: self._w_publish_policy(c, version, weights_path, note))  # type: ignore[no-any-return]

    def get_policy(self) -> Json:
        r = self._reader().execute("SELECT version, weights_path, note, created_at FROM policy"
                                   " ORDER BY version DESC LIMIT 1").fetchone()
        if r is None:
            return {"version": 0, "weights_path": None, "note": None, "created_at": None}
        return {"version": r[0], "weights_path": r[1], "note": r[2], "created_at": r[3]}

    # -- events and stats --------------------------------------------------------------------------------------
    def read_events(self, after: int, limit: int = 1000) -> list[Json]:
        rows = self._reader().execute("SELECT id, kind, data, at FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                      (after, limit)).fetchall()
        return [{"id": r[0], "kind": r[1], "data": loads(r[2]), "at": r[3]} for r in rows]

    def last_event_id(self) -> int:
        r = self._reader().execute("SELECT MAX(id) FROM events").fetchone()
        return int(r[0] or 0)

    def stats(self) -> Json:
        conn = self._reader()
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        traj = dict(conn.execute("SELECT status, count(*) FROM trajectories GROUP BY status").fetchall())
        groups = dict(conn.execute("SELECT status, count(*) FROM groups GROUP BY status").fetchall())
        now = time.time()
        b = conn.execute("SELECT sum(acked_at IS NOT NULL), sum(acked_at IS NULL AND lease_expires_at > ?),"
                         " count(*) FROM batches", (now,)).fetchone()
        return {
            "steps": counters.get("steps", 0),
            "tokens": {"prompt": counters.get("prompt_tokens", 0), "response": counters.get("response_tokens", 0)},
            "continuity": {k: counters.get(f"continuity_{k}", 0) for k in ("first", "clean", "realigned", "fork")},
            "trajectories": {k: traj.get(k, 0) for k in ("open", "complete", "abandoned")},
            "groups": {k: groups.get(k, 0) for k in ("collecting", "ready", "leased", "consumed")},
            "batches": {"consumed": b[0] or 0, "leased": b[1] or 0, "total": b[2] or 0},
            "store": {"backend": "sqlite", "path": self.path,
                      "commits": self._writer.commits if self._writer else 0},
        }

    # -- keys ------------------------------------------------------------------------------------------------
    def create_key(self, scope: str, name: str | None, binding: Json | None = None) -> tuple[KeyRecord, str]:
        bound = check_binding(scope, binding)
        key_id, secret, now = self._write(lambda c: self._w_create_key(c, scope, name, bound))
        return KeyRecord(key_id, scope, name, now, binding=bound), secret

    def list_keys(self) -> list[KeyRecord]:
        rows = self._reader().execute(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at").fetchall()
        return [key_record(r) for r in rows]

    def rebind_key(self, key_id: str, binding: Json) -> bool:
        bound = check_binding("agent", binding)

        def job(c: sqlite3.Connection) -> bool:
            cur = c.execute("UPDATE keys SET binding = ? WHERE key_id = ? AND binding IS NOT NULL", (dumps(bound), key_id))
            return cur.rowcount > 0
        return bool(self._write(job))

    def revoke_key(self, key_id: str) -> bool:
        def job(c: sqlite3.Connection) -> bool:
            cur = c.execute("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                            (time.time(), key_id))
            return cur.rowcount > 0
        return bool(self._write(job))

    def lookup_key(self, secret: str) -> KeyRecord | None:
        r = self._reader().execute(f"SELECT {KEY_COLUMNS} FROM keys WHERE secret_hash = ?",
                                   (hash_secret(secret),)).fetchone()
        if r is None or r[4] is not None:
            return None
        return key_record(r)

    def has_keys(self) -> bool:
        return self._reader().execute("SELECT 1 FROM keys WHERE revoked_at IS NULL AND binding IS NULL"
                                      " LIMIT 1").fetchone() is not None


def _migration_step(conn: sqlite3.Connection, stmt: str) -> None:
    """One migration statement; an ``ADD COLUMN`` whose column exists already is done (SQLite has no
    ``ADD COLUMN IF NOT EXISTS``), so a migration can run again over a database that has it."""
    try:
        conn.execute(stmt)
    except sqlite3.OperationalError as e:
        if not ("ADD COLUMN" in stmt.upper() and "duplicate column" in str(e)):
            raise


__all__ = ["SqliteStore"]
