"""Reads both stores answer the same way, written once: the SQL in the dialect's placeholders
(store/dialect.py), the rows turned into records by store/rows.py. A backend provides ``_conn()`` (a
connection to read on, as a context manager), ``dialect`` and ``_store_info()``; message search
(``list_trajectories``) stays per backend, its plans differ."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from ..types import Json
from .base import KeyRecord, Page
from .dialect import Dialect, equal_filters, where_sql
from .filters import parse_cursor, step_page_sql, traj_where
from .keys import KEY_COLUMNS, hash_secret, key_record
from .rows import (
    BATCH_COLS,
    CHAIN_COLS,
    EVENT_COLS,
    FEEDBACK_COLS,
    GROUP_COLS,
    HISTORY_COLS,
    POLICY_COLS,
    REWARD_COLS,
    STEP_COLS,
    STEP_META_COLS,
    TRAJ_COLS,
    batch_dict,
    chain_of,
    event_dict,
    feedback_dict,
    group_dict,
    history_dict,
    policy_dict,
    rebuild,
    reward_dict,
    step_meta,
    step_with_ids,
    traj_dict,
)


def _page(items: list[Json], rows: list[Any], more: bool) -> Page:
    """A page of ``items`` made from ``rows`` (whose first column is the cursor), ``more`` when a next one exists."""
    return Page(items, str(rows[-1][0]) if more and rows else None)


class StoreReads:
    dialect: ClassVar[Dialect]
    ids_order: ClassVar[str] = ""  # trajectory_ids_matching: the order of the ids (SQLite: as the plan finds them)

    def _conn(self) -> AbstractContextManager[Any]:
        raise NotImplementedError  # the backend's connection for reads

    def _store_info(self) -> Json:
        raise NotImplementedError  # stats()["store"]

    def _all(self, sql: str, args: Any = ()) -> list[Any]:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchall()  # type: ignore[no-any-return]

    def _one(self, sql: str, args: Any = ()) -> Any:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchone()

    # -- step chains (any connection: a reader, or the writer's inside a write) --------------------
    def _chain(self, conn: Any, tid: str, max_index: int | None) -> list[tuple[Any, ...]]:
        p = self.dialect.ph
        sql = f"SELECT {CHAIN_COLS} FROM steps WHERE trajectory_id = {p}"
        args: list[Any] = [tid]
        if max_index is not None:
            sql += f" AND step_index <= {p}"
            args.append(max_index)
        return conn.execute(sql + " ORDER BY step_index", args).fetchall()  # type: ignore[no-any-return]

    def _full_seq_for(self, conn: Any, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        """(index, step_id, full prompt + response) of the last step below ``below_index`` (all: None)."""
        rows = self._chain(conn, trajectory_id, None if below_index is None else below_index - 1)
        if not rows:
            return -1, None, None
        full = rebuild(rows)
        last = rows[-1]
        p, r = full[last[0]]
        return last[1], last[0], p + r

    def _load_full(self, conn: Any, step_id: str) -> Json | None:
        row = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE step_id = {self.dialect.ph}", (step_id,)).fetchone()
        if row is None:
            return None
        return self._steps_with_ids(conn, [row])[0]

    def _steps_with_ids(self, conn: Any, rows: Sequence[Sequence[Any]]) -> list[Json]:
        """Full step dicts for rows selected with STEP_COLS (any trajectories, any order)."""
        need: dict[str, int] = {}
        for r in rows:
            need[r[2]] = max(need.get(r[2], -1), r[4])
        full: dict[str, tuple[bytes, bytes]] = {}
        for tid, max_index in need.items():
            full.update(rebuild(self._chain(conn, tid, max_index)))
        return [step_with_ids(r, full) for r in rows]

    # -- steps -------------------------------------------------------------------------------------
    def get_step(self, step_id: str) -> Json | None:
        with self._conn() as conn:
            return self._load_full(conn, step_id)

    def steps_of(self, trajectory_ids: Sequence[str]) -> dict[str, list[Json]]:
        """Full steps of many trajectories, each list in step_index order."""
        out: dict[str, list[Json]] = {t: [] for t in trajectory_ids}
        n = self.dialect.id_chunk
        with self._conn() as conn:
            for i in range(0, len(trajectory_ids), n):
                clause, args = self.dialect.in_ids("trajectory_id", trajectory_ids[i:i + n])
                rows = conn.execute(f"SELECT {STEP_COLS} FROM steps WHERE {clause} ORDER BY trajectory_id, step_index",
                                    args).fetchall()
                by_t: dict[str, list[Any]] = {}
                for r in rows:
                    by_t.setdefault(r[2], []).append(r)
                for tid, trows in by_t.items():
                    full = rebuild([chain_of(r) for r in trows])
                    out[tid] = [step_with_ids(r, full) for r in trows]
        return out

    def list_steps(self, filters: Json, cursor: str | None, limit: int, with_ids: bool = True) -> Page:
        sql, args = step_page_sql(filters, cursor, limit, STEP_COLS if with_ids else STEP_META_COLS, self.dialect.ph)
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            items = self._steps_with_ids(conn, rows) if with_ids else [step_meta(r) for r in rows]
        return _page(items, rows, more)

    # -- trajectories and groups -------------------------------------------------------------------
    def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json | None:
        row = self._one(f"SELECT {TRAJ_COLS} FROM trajectories WHERE trajectory_id = {self.dialect.ph}",
                        (trajectory_id,))
        if row is None:
            return None
        t = traj_dict(row)
        if with_steps:
            t["steps"] = self.steps_of([trajectory_id])[trajectory_id]
        return t

    def _traj_rows_page(self, rows: list[Any], limit: int) -> Page:
        more = len(rows) > limit
        rows = rows[:limit]
        return _page([traj_dict(r) for r in rows], rows, more)

    def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]:
        where, args = traj_where(filters, self.dialect.ph)
        sql = f"SELECT trajectory_id FROM trajectories{where_sql(where)}{self.ids_order} LIMIT {self.dialect.ph}"
        return [r[0] for r in self._all(sql, [*args, limit])]

    def get_group(self, group_id: str) -> Json | None:
        p = self.dialect.ph
        with self._conn() as conn:
            row = conn.execute(f"SELECT {GROUP_COLS} FROM groups WHERE group_id = {p}", (group_id,)).fetchone()
            if row is None:
                return None
            g = group_dict(row)
            g["trajectory_ids"] = [r[0] for r in conn.execute(
                f"SELECT trajectory_id FROM trajectories WHERE group_id = {p} ORDER BY seq", (group_id,))]
        return g

    def list_groups(self, filters: Json, cursor: str | None, limit: int) -> Page:
        p, seq = self.dialect.ph, self.dialect.rowid
        where, args = equal_filters(filters, ("channel", "status"), p)
        if cursor is not None:
            where.append(f"{seq} < {p}")
            args.append(parse_cursor(cursor))
        rows = self._all(f"SELECT {seq}, {GROUP_COLS} FROM groups{where_sql(where)} ORDER BY {seq} DESC LIMIT {p}",
                         [*args, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return _page([group_dict(r[1:]) for r in rows], rows, more)

    def find_open_trajectory(self, exchange_hash: str) -> str | None:
        row = self._one(self.dialect.sql("SELECT trajectory_id FROM trajectories WHERE exchange_hash = ?"
                                         " AND status = 'open' ORDER BY updated_at DESC LIMIT 1"), (exchange_hash,))
        return row[0] if row else None

    # -- rewards, curation, feedback ---------------------------------------------------------------
    def list_rewards(self, trajectory_id: str | None = None, step_id: str | None = None) -> list[Json]:
        col, val = ("step_id", step_id) if step_id else ("trajectory_id", trajectory_id)
        rows = self._all(f"SELECT {REWARD_COLS} FROM rewards WHERE {col} = {self.dialect.ph} ORDER BY id", (val,))
        return [reward_dict(r) for r in rows]

    def curation_history(self, target_id: str) -> list[Json]:
        rows = self._all(f"SELECT {HISTORY_COLS} FROM curation_history WHERE target_id = {self.dialect.ph}"
                         " ORDER BY id", (target_id,))
        return [history_dict(r) for r in rows]

    def list_feedback(self, filters: Json) -> list[Json]:
        where, args = equal_filters(filters, ("trajectory_id", "step_id", "kind"), self.dialect.ph)
        rows = self._all(f"SELECT {FEEDBACK_COLS} FROM feedback{where_sql(where)} ORDER BY id LIMIT 10000", args)
        return [feedback_dict(r) for r in rows]

    # -- batches, policy, events -------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> Json | None:
        r = self._one(f"SELECT {BATCH_COLS} FROM batches WHERE batch_id = {self.dialect.ph}", (batch_id,))
        return None if r is None else batch_dict(r, time.time())

    def get_policy(self) -> Json:
        return policy_dict(self._one(f"SELECT {POLICY_COLS} FROM policy ORDER BY version DESC LIMIT 1"))

    def read_events(self, after: int, limit: int = 1000) -> list[Json]:
        rows = self._all(self.dialect.sql(f"SELECT {EVENT_COLS} FROM events WHERE id > ? ORDER BY id LIMIT ?"),
                         (after, limit))
        return [event_dict(r) for r in rows]

    def last_event_id(self) -> int:
        return int(self._one("SELECT MAX(id) FROM events")[0] or 0)

    def stats(self) -> Json:
        with self._conn() as conn:
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            traj = dict(conn.execute("SELECT status, count(*) FROM trajectories GROUP BY status").fetchall())
            groups = dict(conn.execute("SELECT status, count(*) FROM groups GROUP BY status").fetchall())
            b = conn.execute(self.dialect.sql(
                "SELECT count(acked_at), count(*) FILTER (WHERE acked_at IS NULL AND lease_expires_at > ?),"
                " count(*) FROM batches"), (time.time(),)).fetchone()
        return {
            "steps": int(counters.get("steps", 0)),
            "tokens": {"prompt": int(counters.get("prompt_tokens", 0)),
                       "response": int(counters.get("response_tokens", 0))},
            "continuity": {k: int(counters.get(f"continuity_{k}", 0)) for k in ("first", "clean", "realigned", "fork")},
            "trajectories": {k: traj.get(k, 0) for k in ("open", "complete", "abandoned")},
            "groups": {k: groups.get(k, 0) for k in ("collecting", "ready", "leased", "consumed")},
            "batches": {"consumed": b[0], "leased": b[1], "total": b[2]},
            "store": self._store_info(),
        }

    # -- keys ----------------------------------------------------------------------------------------
    def list_keys(self) -> list[KeyRecord]:
        return [key_record(r) for r in self._all(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at")]

    def lookup_key(self, secret: str) -> KeyRecord | None:
        r = self._one(f"SELECT {KEY_COLUMNS} FROM keys WHERE secret_hash = {self.dialect.ph}", (hash_secret(secret),))
        if r is None or r[4] is not None:
            return None
        return key_record(r)

    def has_keys(self) -> bool:
        return self._one("SELECT 1 FROM keys WHERE revoked_at IS NULL AND binding IS NULL LIMIT 1") is not None


__all__ = ["StoreReads"]
