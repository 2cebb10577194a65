"""Reads of PostgresStore: the same queries and answers as SqliteStore (rows go through the SQLite
store's row→dict helpers, so both backends answer identically), on pooled autocommit connections."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors

from .availability import is_unavailable
from .base import Json, KeyRecord, Page
from .codec import bytes_to_floats, bytes_to_ids, loads
from .filters import PG_DENSE_TEXT_SQL, like_pattern, parse_cursor, step_page_sql, traj_page_sql, traj_where
from .keys import KEY_COLUMNS, key_record
from .sqlite import (
    GROUP_COLS,
    STEP_COLS,
    STEP_META_COLS,
    TRAJ_COLS,
    SqliteStore,
    group_dict,
    step_meta,
    traj_dict,
)
from .sqlite_writes import hash_secret

_rebuild = SqliteStore._rebuild


PG_DENSE_BUDGET_MS = 50  # message search: how long the newest-first walk may take before the indexed plan


class PgReads:
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

    def _all(self, sql: str, args: Any = ()) -> list[Any]:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Any = ()) -> Any:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchone()

    # -- step chains -----------------------------------------------------------------------------
    @staticmethod
    def _chain(conn: psycopg.Connection[Any], tid: str, max_index: int | None) -> list[tuple[Any, ...]]:
        sql = ("SELECT step_id, step_index, parent_step_id, shared_prefix_len, prompt_tail, response_ids"
               " FROM steps WHERE trajectory_id = %s")
        args: list[Any] = [tid]
        if max_index is not None:
            sql += " AND step_index <= %s"
            args.append(max_index)
        return conn.execute(sql + " ORDER BY step_index", args).fetchall()

    def _full_seq_for(self, conn: psycopg.Connection[Any], trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        rows = self._chain(conn, trajectory_id, None if below_index is None else below_index - 1)
        if not rows:
            return -1, None, None
        full = _rebuild(rows)
        last = rows[-1]
        p, r = full[last[0]]
        return last[1], last[0], p + r

    def _load_full(self, conn: psycopg.Connection[Any], step_id: str) -> Json | None:
        row = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE step_id = %s", (step_id,)).fetchone()
        if row is None:
            return None
        return self._steps_with_ids(conn, [row])[0]

    def _steps_with_ids(self, conn: psycopg.Connection[Any], rows: Sequence[Sequence[Any]]) -> list[Json]:
        need: dict[str, int] = {}
        for r in rows:
            need[r[2]] = max(need.get(r[2], -1), r[4])
        full: dict[str, tuple[bytes, bytes]] = {}
        for tid, max_index in need.items():
            full.update(_rebuild(self._chain(conn, tid, max_index)))
        return [_with_ids(r, full) for r in rows]

    # -- steps -------------------------------------------------------------------------------------
    def get_step(self, step_id: str) -> Json | None:
        with self._conn() as conn:
            return self._load_full(conn, step_id)

    def steps_of(self, trajectory_ids: Sequence[str]) -> dict[str, list[Json]]:
        out: dict[str, list[Json]] = {t: [] for t in trajectory_ids}
        with self._conn() as conn:
            for i in range(0, len(trajectory_ids), 1000):
                chunk = list(trajectory_ids[i:i + 1000])
                rows = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE trajectory_id = ANY(%s)"
                                    " ORDER BY trajectory_id, step_index", (chunk,)).fetchall()
                by_t: dict[str, list[Any]] = {}
                for r in rows:
                    by_t.setdefault(r[2], []).append(r)
                for tid, trows in by_t.items():
                    full = _rebuild([(r[1], r[4], r[8], r[9], r[25], r[26]) for r in trows])
                    out[tid] = [_with_ids(r, full) for r in trows]
        return out

    def list_steps(self, filters: Json, cursor: str | None, limit: int, with_ids: bool = True) -> Page:
        sql, args = step_page_sql(filters, cursor, limit, STEP_COLS if with_ids else STEP_META_COLS, "%s")
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            items = self._steps_with_ids(conn, rows) if with_ids else [step_meta(r) for r in rows]
        return Page(items, str(rows[-1][0]) if more and rows else None)

    # -- trajectories and groups -------------------------------------------------------------------------
    def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json | None:
        row = self._one(f"SELECT {TRAJ_COLS} FROM trajectories WHERE trajectory_id = %s", (trajectory_id,))
        if row is None:
            return None
        t = traj_dict(row)
        if with_steps:
            t["steps"] = self.steps_of([trajectory_id])[trajectory_id]
        return t

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
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([traj_dict(r) for r in rows], str(rows[-1][0]) if more and rows else None)

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

    def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]:
        where, args = traj_where(filters, "%s")
        sql = "SELECT trajectory_id FROM trajectories" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self._all(sql + " ORDER BY seq LIMIT %s", [*args, limit])]

    def get_group(self, group_id: str) -> Json | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {GROUP_COLS} FROM groups WHERE group_id = %s", (group_id,)).fetchone()
            if row is None:
                return None
            g = group_dict(row)
            g["trajectory_ids"] = [r[0] for r in conn.execute(
                "SELECT trajectory_id FROM trajectories WHERE group_id = %s ORDER BY seq", (group_id,))]
        return g

    def list_groups(self, filters: Json, cursor: str | None, limit: int) -> Page:
        where, args = [], []
        for col in ("channel", "status"):
            if filters.get(col) is not None:
                where.append(f"{col} = %s")
                args.append(filters[col])
        if cursor is not None:
            where.append("seq < %s")
            args.append(parse_cursor(cursor))
        sql = f"SELECT seq, {GROUP_COLS} FROM groups" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._all(sql + " ORDER BY seq DESC LIMIT %s", [*args, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([group_dict(r[1:]) for r in rows], str(rows[-1][0]) if more and rows else None)

    def find_open_trajectory(self, exchange_hash: str) -> str | None:
        row = self._one("SELECT trajectory_id FROM trajectories WHERE exchange_hash = %s AND status = 'open'"
                        " ORDER BY updated_at DESC LIMIT 1", (exchange_hash,))
        return row[0] if row else None

    # -- rewards, curation, feedback -----------------------------------------------------------------------
    def list_rewards(self, trajectory_id: str | None = None, step_id: str | None = None) -> list[Json]:
        col, val = ("step_id", step_id) if step_id else ("trajectory_id", trajectory_id)
        rows = self._all("SELECT id, trajectory_id, step_id, name, value, version, details, created_at"
                         f" FROM rewards WHERE {col} = %s ORDER BY id", (val,))
        return [{"id": r[0], "trajectory_id": r[1], "step_id": r[2], "name": r[3], "value": r[4], "version": r[5],
                 "details": loads(r[6]), "created_at": r[7]} for r in rows]

    def curation_history(self, target_id: str) -> list[Json]:
        rows = self._all("SELECT id, target_kind, target_id, change, before, reviewer, at FROM curation_history"
                         " WHERE target_id = %s ORDER BY id", (target_id,))
        return [{"id": r[0], "target_kind": r[1], "target_id": r[2], "change": loads(r[3]), "before": loads(r[4]),
                 "reviewer": r[5], "at": r[6]} for r in rows]

    def list_feedback(self, filters: Json) -> list[Json]:
        where, args = [], []
        for col in ("trajectory_id", "step_id", "kind"):
            if filters.get(col) is not None:
                where.append(f"{col} = %s")
                args.append(filters[col])
        sql = "SELECT id, trajectory_id, step_id, kind, value, comment, author, created_at FROM feedback"
        rows = self._all(sql + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT 10000", args)
        return [{"id": r[0], "trajectory_id": r[1], "step_id": r[2], "kind": r[3], "value": loads(r[4]),
                 "comment": r[5], "author": r[6], "created_at": r[7]} for r in rows]

    # -- batches, policy, events, keys ---------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> Json | None:
        r = self._one("SELECT batch_id, channel, recipe, layout, request, group_ids, trajectory_ids, details,"
                      " policy_version, created_at, lease_expires_at, acked_at FROM batches WHERE batch_id = %s",
                      (batch_id,))
        if r is None:
            return None
        return {"batch_id": r[0], "channel": r[1], "recipe": r[2], "layout": r[3], "request": loads(r[4]),
                "group_ids": loads(r[5]), "trajectory_ids": loads(r[6]), "details": loads(r[7]),
                "policy_version": r[8], "created_at": r[9], "lease_expires_at": r[10], "acked_at": r[11],
                "status": "consumed" if r[11] else ("leased" if r[10] > time.time() else "expired")}

    def get_policy(self) -> Json:
        r = self._one("SELECT version, weights_path, note, created_at FROM policy ORDER BY version DESC LIMIT 1")
        if r is None:
            return {"version": 0, "weights_path": None, "note": None, "created_at": None}
        return {"version": r[0], "weights_path": r[1], "note": r[2], "created_at": r[3]}

    def read_events(self, after: int, limit: int = 1000) -> list[Json]:
        rows = self._all("SELECT id, kind, data, at FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
        return [{"id": r[0], "kind": r[1], "data": loads(r[2]), "at": r[3]} for r in rows]

    def last_event_id(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(id), 0) FROM events")[0])

    def list_keys(self) -> list[KeyRecord]:
        rows = self._all(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at")
        return [key_record(r) for r in rows]

    def lookup_key(self, secret: str) -> KeyRecord | None:
        r = self._one(f"SELECT {KEY_COLUMNS} FROM keys WHERE secret_hash = %s", (hash_secret(secret),))
        if r is None or r[4] is not None:
            return None
        return key_record(r)

    def has_keys(self) -> bool:
        return self._one("SELECT 1 FROM keys WHERE revoked_at IS NULL AND binding IS NULL LIMIT 1") is not None


def _with_ids(r: Sequence[Any], full: dict[str, tuple[bytes, bytes]]) -> Json:
    d = step_meta(r)
    p, resp = full[r[1]]
    d["prompt_ids"] = bytes_to_ids(p)
    d["response_ids"] = bytes_to_ids(resp)
    d["response_logprobs"] = bytes_to_floats(r[27])
    return d


__all__ = ["PgReads"]
