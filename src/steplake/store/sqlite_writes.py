"""Write operations of SqliteStore. Each ``_w_*`` method runs on the writer thread inside a savepoint."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConflictError, NotFoundError
from ..records import DEFAULT_CHANNEL, CurationIn, FeedbackIn, RewardIn, Step
from ..rules.continuity import classify
from ..rules.curation import CurationState, apply_curation, curation_change, curation_event, merge_metadata
from ..rules.rewards import latest_components, trajectory_reward
from ..rules.status import (
    check_step_fits,
    completed_at,
    group_status_after,
    idle_cutoff,
    idle_outcome,
    status_deltas,
)
from .accounting import account_step
from .base import AppendResult, Json
from .codec import dumps, ids_to_bytes, loads
from .encode import Encoded, encode_step, indexed_text

TRAJ_CACHE_LIMIT = 20_000
GROUP_CACHE_LIMIT = 200_000


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
class _AppendCtx:
    now: float
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


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SqliteWrites:
    _traj: dict[str, TrajState]
    _groups_known: set[str]
    _policy_version: int
    reward_weights: dict[str, float]

    def _full_seq_for(self, conn: sqlite3.Connection, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        raise NotImplementedError  # provided by the reads mixin

    # -- events and counters ---------------------------------------------------------------------
    @staticmethod
    def _event(conn: sqlite3.Connection, kind: str, data: Json, now: float) -> None:
        conn.execute("INSERT INTO events(kind, data, at) VALUES (?, ?, ?)", (kind, dumps(data), now))

    @staticmethod
    def _count(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        conn.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in deltas.items() if v])

    # -- groups and trajectories -------------------------------------------------------------------
    def _ensure_group(self, conn: sqlite3.Connection, group_id: str, channel: str, size: int | None,
                      metadata: Json | None, now: float) -> None:
        if size is None and group_id in self._groups_known:
            return
        row = conn.execute("SELECT size FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (group_id, channel, size or 1, dumps(metadata or {}), now, now))
            self._event(conn, "group", {"group_id": group_id, "status": "collecting", "size": size or 1}, now)
            self._groups_known.add(group_id)
        elif size is not None and size > row[0]:
            conn.execute("UPDATE groups SET size = ?, updated_at = ? WHERE group_id = ?", (size, now, group_id))
            self._refresh_group(conn, group_id, now)

    def _open_trajectory(self, conn: sqlite3.Connection, trajectory_id: str, group_id: str | None,
                         group_size: int | None, channel: str | None, metadata: Json, now: float) -> TrajState:
        gid = group_id or trajectory_id
        ch = channel or DEFAULT_CHANNEL
        self._ensure_group(conn, gid, ch, group_size, None, now)
        agent = metadata.get("agent") if isinstance(metadata.get("agent"), str) else None
        conn.execute(
            "INSERT INTO trajectories(trajectory_id, group_id, channel, metadata, agent, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?)", (trajectory_id, gid, ch, dumps(metadata), agent, now, now))
        conn.execute("UPDATE groups SET n_trajectories = n_trajectories + 1 WHERE group_id = ?", (gid,))
        self._event(conn, "trajectory", {"trajectory_id": trajectory_id, "group_id": gid, "channel": ch,
                                         "status": "open"}, now)
        return TrajState(gid, ch, "open", 0, -1, None, None)

    def _open_deferred(self, conn: sqlite3.Connection, s: Step, ctx: _AppendCtx) -> TrajState:
        """Open a trajectory for an appended step; its row (and a new group's) are written at the next flush."""
        tid, gid, ch = s.trajectory_id, s.group_id or s.trajectory_id, s.channel or DEFAULT_CHANNEL
        if gid in ctx.absent_groups:
            ctx.absent_groups.discard(gid)
            ctx.new_groups[gid] = (gid, ch, 1, b"{}", ctx.now, ctx.now)
        elif gid not in ctx.new_groups:
            self._ensure_group(conn, gid, ch, None, None, ctx.now)
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

    def _set_status(self, conn: sqlite3.Connection, tid: str, old: str, new: str, now: float,
                    group_id: str) -> None:
        if old == new:
            return
        conn.execute("UPDATE trajectories SET status = ?, updated_at = ?, completed_at = ? WHERE trajectory_id = ?",
                     (new, now, completed_at(new, now), tid))
        dc, da = status_deltas(old, new)
        conn.execute("UPDATE groups SET n_complete = n_complete + ?, n_abandoned = n_abandoned + ?, updated_at = ?"
                     " WHERE group_id = ?", (dc, da, now, group_id))
        self._event(conn, "trajectory", {"trajectory_id": tid, "group_id": group_id, "status": new}, now)
        self._refresh_group(conn, group_id, now)

    def _refresh_group(self, conn: sqlite3.Connection, group_id: str, now: float) -> None:
        row = conn.execute("SELECT status, size, n_complete, n_abandoned, channel FROM groups WHERE group_id = ?",
                           (group_id,)).fetchone()
        if row is None:
            return
        status, size, nc, na, channel = row
        new = group_status_after(status, size, nc, na)
        if new != status:
            conn.execute("UPDATE groups SET status = ?, ready_at = ? WHERE group_id = ?",
                         (new, now if new == "ready" else None, group_id))
            self._event(conn, "group", {"group_id": group_id, "channel": channel, "status": new,
                                        "n_complete": nc, "n_abandoned": na, "size": size}, now)

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
        ctx = _AppendCtx(now)
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
        self._count(conn, ctx.counts)
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
        " min_policy, max_policy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

    def _flush(self, conn: sqlite3.Connection, ctx: _AppendCtx) -> None:
        """Write what the append collected: new groups, then new trajectories (with the counters of their
        steps so far, so they need no update), then steps, each kind with its events in that order."""
        if ctx.new_groups:
            conn.executemany(
                "INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at, n_trajectories)"
                " VALUES (?,?,?,?,?,?,?)", [(*row, ctx.group_inc.pop(g, 0)) for g, row in ctx.new_groups.items()])
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
            conn.executemany(self._TRAJ_INSERT, rows)
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
        if check_step_fits(s, st.status, st.group_id, st.channel):  # an agent came back: reopen
            self._set_status(conn, tid, "abandoned", "open", ctx.now, st.group_id)
            st.status = "open"
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
            self._rechain_child(conn, tid, index, step_id, prompt + response)
        st.next_index = max(st.next_index, index + 1)
        ctx.local[tid] = st
        account_step(ctx.tdelta, ctx.counts, s, tid, index, st.next_index, continuity, shared, policy)
        ctx.res.accepted += 1
        ctx.res.step_ids.append(step_id)

    def _rechain_child(self, conn: sqlite3.Connection, tid: str, index: int, step_id: str, seq: bytes) -> None:
        """A step landed before an existing later one: re-derive that child's continuity against it."""
        row = conn.execute("SELECT step_id, step_index FROM steps WHERE trajectory_id = ? AND step_index > ?"
                           " ORDER BY step_index LIMIT 1", (tid, index)).fetchone()
        if row is None:
            return
        child = self._load_full(conn, row[0])  # type: ignore[attr-defined]
        prompt = ids_to_bytes(child["prompt_ids"])
        continuity, shared = classify(seq, prompt)
        conn.execute("UPDATE steps SET continuity = ?, parent_step_id = ?, shared_prefix_len = ?, prompt_tail = ?"
                     " WHERE step_id = ?", (continuity, step_id, shared, prompt[shared * 4:], row[0]))

    # -- trajectories ------------------------------------------------------------------------------
    def _w_create_trajectory(self, conn: sqlite3.Connection, tid: str, group_id: str | None,
                             group_size: int | None, channel: str | None, metadata: Json) -> None:
        now = time.time()
        row = conn.execute("SELECT group_id, channel FROM trajectories WHERE trajectory_id = ?", (tid,)).fetchone()
        if row is not None:
            if (group_id and group_id != row[0]) or (channel and channel != row[1]):
                raise ConflictError(f"trajectory {tid!r} exists in group {row[0]!r}, channel {row[1]!r}",
                                    code="trajectory_exists")
            if group_size:
                self._ensure_group(conn, row[0], row[1], group_size, None, now)
            return
        self._traj[tid] = self._open_trajectory(conn, tid, group_id, group_size, channel, metadata, now)

    def _w_complete(self, conn: sqlite3.Connection, tid: str, reward: float | None, metadata: Json | None) -> None:
        now = time.time()
        row = conn.execute("SELECT status, group_id, metadata FROM trajectories WHERE trajectory_id = ?",
                           (tid,)).fetchone()
        if row is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        if metadata:
            merged = merge_metadata(loads(row[2]), metadata)
            conn.execute("UPDATE trajectories SET metadata = ? WHERE trajectory_id = ?", (dumps(merged), tid))
        if reward is not None:
            conn.execute("UPDATE trajectories SET explicit_reward = ? WHERE trajectory_id = ?", (reward, tid))
            self._recompute_reward(conn, tid)
        self._set_status(conn, tid, row[0], "complete", now, row[1])
        self._traj.pop(tid, None)

    def _w_sweep(self, conn: sqlite3.Connection, idle_timeout: float, now: float) -> int:
        rows = conn.execute(
            "SELECT trajectory_id, group_id, last_finish_reason, last_tool_calls FROM trajectories"
            " WHERE status = 'open' AND updated_at < ? LIMIT 5000", (idle_cutoff(now, idle_timeout),)).fetchall()
        for tid, gid, finish, tools in rows:
            self._set_status(conn, tid, "open", idle_outcome(finish, tools), now, gid)
            self._traj.pop(tid, None)
        return len(rows)

    def _w_delete(self, conn: sqlite3.Connection, tid: str) -> bool:
        row = conn.execute("SELECT status, group_id FROM trajectories WHERE trajectory_id = ?", (tid,)).fetchone()
        if row is None:
            return False
        status, gid = row
        n = conn.execute("SELECT count(*) FROM steps WHERE trajectory_id = ?", (tid,)).fetchone()[0]
        conn.execute("DELETE FROM curation_history WHERE target_id = ? OR target_id IN"
                     " (SELECT step_id FROM steps WHERE trajectory_id = ?)", (tid, tid))
        conn.execute("DELETE FROM rewards WHERE trajectory_id = ? OR step_id IN (SELECT step_id FROM steps WHERE trajectory_id = ?)", (tid, tid))
        conn.execute("DELETE FROM feedback WHERE trajectory_id = ? OR step_id IN (SELECT step_id FROM steps WHERE trajectory_id = ?)", (tid, tid))
        conn.execute("DELETE FROM step_text WHERE rowid IN (SELECT seq FROM steps WHERE trajectory_id = ?)", (tid,))
        conn.execute("DELETE FROM reward_claims WHERE trajectory_id = ?", (tid,))
        conn.execute("DELETE FROM steps WHERE trajectory_id = ?", (tid,))
        conn.execute("DELETE FROM trajectories WHERE trajectory_id = ?", (tid,))
        conn.execute("UPDATE groups SET n_trajectories = n_trajectories - 1, n_complete = n_complete - ?,"
                     " n_abandoned = n_abandoned - ? WHERE group_id = ?",
                     (int(status == "complete"), int(status == "abandoned"), gid))
        self._count(conn, {"steps": -n})
        now = time.time()
        self._event(conn, "trajectory", {"trajectory_id": tid, "group_id": gid, "status": "deleted"}, now)
        self._traj.pop(tid, None)
        return True

    # -- rewards, curation, feedback ---------------------------------------------------------------
    def _recompute_reward(self, conn: sqlite3.Connection, tid: str) -> None:
        rows = conn.execute("SELECT name, value, version FROM rewards WHERE trajectory_id = ? AND step_id IS NULL"
                            " ORDER BY id", (tid,)).fetchall()
        comps = latest_components(rows)
        explicit = conn.execute("SELECT explicit_reward FROM trajectories WHERE trajectory_id = ?", (tid,)).fetchone()[0]
        reward = trajectory_reward(explicit, comps, self.reward_weights)
        conn.execute("UPDATE trajectories SET reward = ?, reward_components = ? WHERE trajectory_id = ?",
                     (reward, dumps(comps), tid))

    def _w_add_reward(self, conn: sqlite3.Connection, r: RewardIn) -> Json:
        now = time.time()
        tid = r.trajectory_id
        if r.step_id is not None:
            row = conn.execute("SELECT trajectory_id FROM steps WHERE step_id = ?", (r.step_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"step {r.step_id!r} not found", code="step_not_found")
            conn.execute("UPDATE steps SET reward = ? WHERE step_id = ?", (r.value, r.step_id))
            tid = row[0]
        elif conn.execute("SELECT 1 FROM trajectories WHERE trajectory_id = ?", (tid,)).fetchone() is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        cur = conn.execute("INSERT INTO rewards(trajectory_id, step_id, name, value, version, details, created_at)"
                           " VALUES (?,?,?,?,?,?,?)", (tid if r.step_id is None else tid, r.step_id, r.name,
                                                       r.value, r.version, dumps(r.details), now))
        if r.step_id is None:
            assert tid is not None
            self._recompute_reward(conn, tid)
        out = {"id": cur.lastrowid, "trajectory_id": tid, "step_id": r.step_id, "name": r.name, "value": r.value,
               "version": r.version, "details": r.details, "created_at": now}
        self._event(conn, "reward", out, now)
        return out

    def _w_curate(self, conn: sqlite3.Connection, c: CurationIn, traj_ids: list[str]) -> int:
        now = time.time()
        change = curation_change(c)
        n = 0
        targets = [("step", i) for i in (c.step_ids or [])] + [("trajectory", i) for i in traj_ids]
        for kind, tid in targets:
            table, key = ("steps", "step_id") if kind == "step" else ("trajectories", "trajectory_id")
            row = conn.execute(f"SELECT quality, trainable, tags, note FROM {table} WHERE {key} = ?", (tid,)).fetchone()
            if row is None:
                raise NotFoundError(f"{kind} {tid!r} not found", code=f"{kind}_not_found")
            before = CurationState.stored(row[0], row[1], loads(row[2]), row[3])
            after = apply_curation(before, c)
            conn.execute(f"UPDATE {table} SET quality = ?, trainable = ?, tags = ?, note = ?, reviewer = ?,"
                         f" curated_at = ? WHERE {key} = ?",
                         (after.quality, int(after.trainable), dumps(after.tags), after.note, c.reviewer, now, tid))
            conn.execute("INSERT INTO curation_history(target_kind, target_id, change, before, reviewer, at)"
                         " VALUES (?,?,?,?,?,?)", (kind, tid, dumps(change), dumps(before.as_record()), c.reviewer, now))
            n += 1
        self._event(conn, "curation", curation_event(c, traj_ids, n, change), now)
        return n

    def _w_feedback(self, conn: sqlite3.Connection, f: FeedbackIn) -> Json:
        now = time.time()
        tid = f.trajectory_id
        if f.step_id is not None:
            row = conn.execute("SELECT trajectory_id FROM steps WHERE step_id = ?", (f.step_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"step {f.step_id!r} not found", code="step_not_found")
            tid = row[0]
        elif conn.execute("SELECT 1 FROM trajectories WHERE trajectory_id = ?", (tid,)).fetchone() is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        cur = conn.execute("INSERT INTO feedback(trajectory_id, step_id, kind, value, comment, author, created_at)"
                           " VALUES (?,?,?,?,?,?,?)", (tid, f.step_id, f.kind, dumps(f.value), f.comment, f.author, now))
        out = {"id": cur.lastrowid, "trajectory_id": tid, "step_id": f.step_id, "kind": f.kind, "value": f.value,
               "comment": f.comment, "author": f.author, "created_at": now}
        self._event(conn, "feedback", out, now)
        return out

    # -- policy and keys ---------------------------------------------------------------------------
    def _w_publish_policy(self, conn: sqlite3.Connection, version: int, weights_path: str | None,
                          note: str | None) -> Json:
        cur = conn.execute("SELECT MAX(version) FROM policy").fetchone()[0]
        if cur is not None and version <= cur:
            raise ConflictError(f"policy version must increase: current is {cur}, got {version}",
                                code="policy_version_not_increasing")
        now = time.time()
        conn.execute("INSERT INTO policy(version, weights_path, note, created_at) VALUES (?,?,?,?)",
                     (version, weights_path, note, now))
        self._policy_version = version
        out = {"version": version, "weights_path": weights_path, "note": note, "created_at": now}
        self._event(conn, "policy", out, now)
        return out

    @staticmethod
    def _w_create_key(conn: sqlite3.Connection, scope: str, name: str | None,
                      binding: Json | None = None) -> tuple[str, str, float]:
        secret = f"sl-{scope}-{secrets.token_urlsafe(32)}"
        key_id = f"key_{secrets.token_hex(6)}"
        now = time.time()
        conn.execute("INSERT INTO keys(key_id, secret_hash, scope, name, created_at, binding) VALUES (?,?,?,?,?,?)",
                     (key_id, hash_secret(secret), scope, name, now, dumps(binding) if binding is not None else None))
        return key_id, secret, now


__all__ = ["SqliteWrites", "TrajState", "hash_secret"]
