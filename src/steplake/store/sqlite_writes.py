"""Write operations of SqliteStore that are its own: the append path (one writer thread, so the append state
of open trajectories is cached here and continuity needs no chain walk) and the hooks of the writes shared
with PostgreSQL (store/writes.py). Each ``_w_*`` method runs on the writer thread inside a savepoint."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConflictError
from ..records import DEFAULT_CHANNEL, Step
from ..rules.continuity import classify
from ..types import Json
from .accounting import account_step
from .base import AppendResult
from .codec import dumps
from .encode import Encoded, encode_step, indexed_text
from .writer import SqliteTx
from .writes import StoreWrites, TrajRef, WriteTx

TRAJ_CACHE_LIMIT = 20_000
GROUP_CACHE_LIMIT = 200_000
MULTI_ROWS = 256  # rows per INSERT statement (17 columns × 256 stays far below SQLite's variable limit)


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``head`` (``INSERT INTO t(cols) VALUES ``) for ``rows``, up to ``MULTI_ROWS`` rows per statement. The tables
    with counter triggers (trajectories, groups) pay a statement journal per statement, one page copy per index:
    one statement per row (``executemany``) cost three times as much per row as a multi-row statement."""
    if not rows:
        return
    marks = "(" + ",".join("?" * len(rows[0])) + ")"
    for k in range(0, len(rows), MULTI_ROWS):
        chunk = rows[k:k + MULTI_ROWS]
        conn.execute(head + ",".join([marks] * len(chunk)), [v for row in chunk for v in row])


@dataclass
class TrajState:
    """Writer-side cache of an open trajectory: what continuity of its next step needs."""

    group_id: str
    channel: str
    status: str
    next_index: int
    last_index: int  # -1: no step yet
    last_step_id: str | None
    last_seq: bytes | None  # parent's prompt_ids + response_ids, int32 bytes


@dataclass
class _Found:
    """An existing trajectory, as the shared writes read it."""

    group_id: str
    channel: str
    status: str


@dataclass
class _AppendCtx:
    now: float
    tx: SqliteTx
    local: dict[str, TrajState] = field(default_factory=dict)
    tdelta: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"steps": 0, "prompt_tokens": 0, "response_tokens": 0})
    res: AppendResult = field(default_factory=lambda: AppendResult(accepted=0))
    existing: dict[str, bytes] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (search text, step_id)
    events: list[tuple[bytes, float]] = field(default_factory=list)
    absent: set[str] = field(default_factory=set)  # trajectories known not to exist yet
    new_trajs: list[tuple[Any, ...]] = field(default_factory=list)
    traj_events: list[tuple[bytes, float]] = field(default_factory=list)
    group_inc: dict[str, int] = field(default_factory=dict)
    absent_groups: set[str] = field(default_factory=set)  # groups known not to exist yet
    new_groups: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # written at the next flush


class SqliteWrites(StoreWrites):
    _traj: dict[str, TrajState]
    _groups_known: set[str]
    _policy_version: int

    def _full_seq_for(self, conn: sqlite3.Connection, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        raise NotImplementedError  # store/reads.py

    # -- hooks of the shared writes (store/writes.py) ----------------------------------------------------
    def _find_trajectory(self, tx: WriteTx, tid: str) -> TrajRef | None:
        row = tx.one("SELECT group_id, channel, status FROM trajectories WHERE trajectory_id = ?", (tid,))
        return None if row is None else _Found(row[0], row[1], row[2])

    def _opened_state(self, group_id: str, channel: str) -> TrajState:
        return TrajState(group_id, channel, "open", 0, -1, None, None)

    def _forget_trajectory(self, tid: str) -> None:
        self._traj.pop(tid, None)

    def _steps_clause(self, tx: WriteTx, tid: str) -> tuple[str, list[Any], int]:
        n = tx.one("SELECT count(*) FROM steps WHERE trajectory_id = ?", (tid,))[0]
        return "IN (SELECT step_id FROM steps WHERE trajectory_id = ?)", [tid], int(n)

    def _ensure_group(self, tx: WriteTx, group_id: str, channel: str, size: int | None, metadata: Json | None,
                      now: float) -> None:
        if size is None and group_id in self._groups_known:
            return
        super()._ensure_group(tx, group_id, channel, size, metadata, now)
        self._groups_known.add(group_id)

    def _open_trajectory(self, tx: WriteTx, tid: str, group_id: str | None, group_size: int | None,
                         channel: str | None, metadata: Json, now: float) -> TrajRef:
        st = super()._open_trajectory(tx, tid, group_id, group_size, channel, metadata, now)
        if isinstance(st, TrajState):
            self._traj[tid] = st
        return st

    def _w_publish_policy(self, tx: WriteTx, version: int, weights_path: str | None, note: str | None) -> Json:
        out = super()._w_publish_policy(tx, version, weights_path, note)
        self._policy_version = version
        return out

    # -- appends ------------------------------------------------------------------------------------
    def _open_deferred(self, conn: sqlite3.Connection, s: Step, ctx: _AppendCtx) -> TrajState:
        """Open a trajectory for an appended step; its row (and a new group's) are written at the next flush."""
        tid, gid, ch = s.trajectory_id, s.group_id or s.trajectory_id, s.channel or DEFAULT_CHANNEL
        if gid in ctx.absent_groups:
            ctx.absent_groups.discard(gid)
            ctx.new_groups[gid] = (gid, ch, 1, b"{}", ctx.now, ctx.now)
        elif gid not in ctx.new_groups:
            self._ensure_group(ctx.tx, gid, ch, None, None, ctx.now)
        meta = dict(s.metadata)
        agent = meta.get("agent") if isinstance(meta.get("agent"), str) else None
        ctx.new_trajs.append((tid, gid, ch, dumps(meta), agent, ctx.now, ctx.now))
        ctx.group_inc[gid] = ctx.group_inc.get(gid, 0) + 1
        ctx.traj_events.append((dumps({"trajectory_id": tid, "group_id": gid, "channel": ch, "status": "open"}),
                                ctx.now))
        ctx.absent.discard(tid)
        return TrajState(gid, ch, "open", 0, -1, None, None)

    def _prefetch_absent(self, conn: sqlite3.Connection, steps: Sequence[Step], ctx: _AppendCtx) -> None:
        """One query per 500 ids for the trajectories (and their groups) this append will have to open."""
        unknown = list({s.trajectory_id for s in steps if s.trajectory_id not in self._traj})
        for k in range(0, len(unknown), 500):
            chunk = unknown[k:k + 500]
            q = f"SELECT trajectory_id FROM trajectories WHERE trajectory_id IN ({','.join('?' * len(chunk))})"
            present = {r[0] for r in conn.execute(q, chunk)}
            ctx.absent.update(t for t in chunk if t not in present)
        gids = list({s.group_id or s.trajectory_id for s in steps
                     if s.trajectory_id in ctx.absent} - self._groups_known)
        for k in range(0, len(gids), 500):
            chunk = gids[k:k + 500]
            q = f"SELECT group_id FROM groups WHERE group_id IN ({','.join('?' * len(chunk))})"
            present = {r[0] for r in conn.execute(q, chunk)}
            self._groups_known.update(present)
            ctx.absent_groups.update(g for g in chunk if g not in present)

    def _traj_state(self, conn: sqlite3.Connection, tid: str, local: dict[str, TrajState],
                    absent: set[str] | None = None) -> TrajState | None:
        st = local.get(tid) or self._traj.get(tid)
        if st is not None:
            return st
        if absent is not None and tid in absent:
            return None
        row = conn.execute("SELECT group_id, channel, status, next_index FROM trajectories WHERE trajectory_id = ?",
                           (tid,)).fetchone()
        if row is None:
            return None
        last_index, last_id, last_seq = self._full_seq_for(conn, tid, None)
        return TrajState(row[0], row[1], row[2], row[3], last_index, last_id, last_seq)

    # -- steps -------------------------------------------------------------------------------------
    _STEP_INSERT = (
        "INSERT INTO steps(step_id, trajectory_id, group_id, step_index, channel, policy_version, continuity,"
        " parent_step_id, shared_prefix_len, prompt_len, response_len, prompt_tail, response_ids,"
        " response_logprobs, token_source, finish_reason, model, reward, latency_ms, created_at, content_hash, doc)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

    def _w_append(self, conn: sqlite3.Connection, steps: Sequence[Step],
                  encoded: Sequence[Encoded] | None = None) -> AppendResult:
        """Append ``steps`` (``encoded``: their ``encode_step`` forms, when the caller prepared them)."""
        now = time.time()
        ctx = _AppendCtx(now, SqliteTx(conn))
        ids = [s.step_id for s in steps if s.step_id]
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            q = f"SELECT step_id, content_hash FROM steps WHERE step_id IN ({','.join('?' * len(chunk))})"
            ctx.existing.update({r[0]: bytes(r[1]) for r in conn.execute(q, chunk)})
        self._prefetch_absent(conn, steps, ctx)
        try:
            for i, s in enumerate(steps):
                self._append_one(conn, s, encoded[i] if encoded is not None else encode_step(s), ctx)
            self._flush(conn, ctx)
        except sqlite3.IntegrityError as e:
            raise ConflictError(f"conflicting step in this batch: {e}", code="step_conflict") from None
        conn.executemany(
            "UPDATE trajectories SET n_steps = n_steps + ?, next_index = MAX(next_index, ?), n_tokens = n_tokens + ?,"
            " n_realigned = n_realigned + ?, n_fork = n_fork + ?, updated_at = ?,"
            " last_finish_reason = COALESCE(?, last_finish_reason), last_tool_calls = COALESCE(?, last_tool_calls),"
            " exchange_hash = COALESCE(?, exchange_hash),"
            " min_policy = MIN(COALESCE(min_policy, ?), ?), max_policy = MAX(COALESCE(max_policy, ?), ?)"
            " WHERE trajectory_id = ?",
            [(d["n"], d["next"], d["tokens"], d["realigned"], d["fork"], now, d["finish"], d["tools"],
              d["xhash"], d["pmin"], d["pmin"], d["pmax"], d["pmax"], tid) for tid, d in ctx.tdelta.items()])
        ctx.tx.count(ctx.counts)
        for tid, st in ctx.local.items():  # most recently used last; trim the oldest
            self._traj.pop(tid, None)
            self._traj[tid] = st
        while len(self._traj) > TRAJ_CACHE_LIMIT:
            del self._traj[next(iter(self._traj))]
        if len(self._groups_known) > GROUP_CACHE_LIMIT:
            self._groups_known.clear()
        return ctx.res

    _TRAJ_INSERT = (
        "INSERT INTO trajectories(trajectory_id, group_id, channel, metadata, agent, created_at, updated_at,"
        " n_steps, next_index, n_tokens, n_realigned, n_fork, last_finish_reason, last_tool_calls, exchange_hash,"
        " min_policy, max_policy) VALUES ")
    _GROUP_INSERT = "INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at, n_trajectories) VALUES "

    def _flush(self, conn: sqlite3.Connection, ctx: _AppendCtx) -> None:
        """Write what the append collected: new groups, then new trajectories (with the counters of their
        steps so far, so they need no update), then steps, each kind with its events in that order."""
        if ctx.new_groups:
            insert_rows(conn, self._GROUP_INSERT, [(*row, ctx.group_inc.pop(g, 0)) for g, row in ctx.new_groups.items()])
            conn.executemany("INSERT INTO events(kind, data, at) VALUES ('group', ?, ?)",
                             [(dumps({"group_id": g, "status": "collecting", "size": 1}), ctx.now)
                              for g in ctx.new_groups])
            self._groups_known.update(ctx.new_groups)
            ctx.new_groups.clear()
        if ctx.new_trajs:  # trajectories (and their "open" events) before their steps
            rows = []
            for row in ctx.new_trajs:
                d = ctx.tdelta.pop(row[0], None)
                rows.append((*row, 0, 0, 0, 0, 0, None, 0, None, None, None) if d is None else (
                    *row, d["n"], d["next"], d["tokens"], d["realigned"], d["fork"], d["finish"], d["tools"] or 0,
                    d["xhash"], d["pmin"], d["pmax"]))
            insert_rows(conn, self._TRAJ_INSERT, rows)
            if ctx.group_inc:
                conn.executemany("UPDATE groups SET n_trajectories = n_trajectories + ? WHERE group_id = ?",
                                 [(n, g) for g, n in ctx.group_inc.items()])
            conn.executemany("INSERT INTO events(kind, data, at) VALUES ('trajectory', ?, ?)", ctx.traj_events)
            ctx.new_trajs.clear()
            ctx.group_inc.clear()
            ctx.traj_events.clear()
        if ctx.rows:
            conn.executemany(self._STEP_INSERT, ctx.rows)
            ctx.rows.clear()
        if ctx.texts:
            conn.executemany("INSERT INTO step_text(rowid, trajectory_id, text)"
                             " SELECT seq, trajectory_id, ? FROM steps WHERE step_id = ?", ctx.texts)
            ctx.texts.clear()
        if ctx.events:
            conn.executemany("INSERT INTO events(kind, data, at) VALUES ('step', ?, ?)", ctx.events)
            ctx.events.clear()

    def _check_trajectory(self, conn: sqlite3.Connection, s: Step, ctx: _AppendCtx) -> TrajState:
        tid = s.trajectory_id
        st = self._traj_state(conn, tid, ctx.local, ctx.absent)
        if st is None:  # its row and "open" event are written at flush, before its steps
            return self._open_deferred(conn, s, ctx)
        self._admit_step(ctx.tx, s, st, ctx.now)
        return st

    def _append_one(self, conn: sqlite3.Connection, s: Step, e: Encoded, ctx: _AppendCtx) -> None:
        prompt, response, logprobs, chash = e.prompt, e.response, e.logprobs, e.content_hash
        step_id = s.step_id or f"st_{uuid.uuid4().hex}"
        old = ctx.existing.get(step_id)
        if old is not None:
            if old != chash:
                raise ConflictError(f"step {step_id!r} already exists with other content", code="step_conflict")
            ctx.res.duplicates += 1
            ctx.res.step_ids.append(step_id)
            return
        ctx.existing[step_id] = chash
        st = self._check_trajectory(conn, s, ctx)
        tid = s.trajectory_id
        index = st.next_index if s.step_index is None else s.step_index
        if index > st.last_index:
            parent_id, parent_seq = st.last_step_id, st.last_seq
        else:
            self._flush(conn, ctx)
            dup = conn.execute("SELECT step_id FROM steps WHERE trajectory_id = ? AND step_index = ?",
                               (tid, index)).fetchone()
            if dup is not None:
                raise ConflictError(f"trajectory {tid!r} already has a step {dup[0]!r} at step_index {index}",
                                    code="step_index_conflict")
            _, parent_id, parent_seq = self._full_seq_for(conn, tid, index)
        continuity, shared = classify(parent_seq, prompt)
        policy = self._policy_version if s.policy_version is None else s.policy_version
        ctx.rows.append((step_id, tid, st.group_id, index, st.channel, policy, continuity, parent_id, shared,
                         len(prompt) // 4, len(response) // 4, prompt[shared * 4:], response, logprobs,
                         s.token_source, s.finish_reason, s.model, s.reward, s.latency_ms, ctx.now, chash, e.doc))
        if text := indexed_text(e.text, s.messages, continuity):
            ctx.texts.append((text, step_id))
        ctx.events.append((dumps({"step_id": step_id, "trajectory_id": tid, "group_id": st.group_id,
                                  "step_index": index, "continuity": continuity, "channel": st.channel}), ctx.now))
        if index > st.last_index:
            st.last_index, st.last_step_id, st.last_seq = index, step_id, prompt + response
        else:
            self._flush(conn, ctx)
            self._rechain_child(ctx.tx, tid, index, step_id, prompt + response)
        st.next_index = max(st.next_index, index + 1)
        ctx.local[tid] = st
        account_step(ctx.tdelta, ctx.counts, s, tid, index, st.next_index, continuity, shared, policy)
        ctx.res.accepted += 1
        ctx.res.step_ids.append(step_id)

__all__ = ["SqliteWrites", "TrajState"]
