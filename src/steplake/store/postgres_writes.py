"""Write operations of PostgresStore. Each ``_w_*`` method runs inside a write transaction (``Tx``).

Several servers may write the same trajectory: every write that reads-then-changes a trajectory first
locks its row (``SELECT ... FOR UPDATE``; several trajectories in sorted order), and continuity is computed
from what the database holds under that lock (the trajectory row keeps its last step's full sequence while
it is open), so no per-process cache can go stale.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConflictError, NotFoundError
from ..pool.continuity import classify
from ..records import DEFAULT_CHANNEL, CurationIn, FeedbackIn, RewardIn, Step
from .base import AppendResult, Json
from .codec import dumps, floats_to_bytes, ids_to_bytes, loads
from .postgres_tx import Tx, lock_key
from .sqlite_writes import hash_secret, step_content_hash

STEP_INSERT_COLS = ("step_id, trajectory_id, group_id, step_index, channel, policy_version, continuity, parent_step_id,"
                    " shared_prefix_len, prompt_len, response_len, prompt_tail, response_ids, response_logprobs,"
                    " token_source, finish_reason, model, reward, latency_ms, created_at, content_hash, doc")


@dataclass
class PgTraj:
    """A trajectory's append state, read under its row lock."""

    group_id: str
    channel: str
    status: str
    next_index: int
    last_step_id: str | None
    last_seq: bytes | None  # None with last_step_id set: rebuild from the chain when needed

    @property
    def last_index(self) -> int:
        return self.next_index - 1 if self.last_step_id is not None else -1


class PgWrites:
    reward_weights: dict[str, float]

    def _full_seq_for(self, conn: Any, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        raise NotImplementedError  # provided by PostgresStore

    def _load_full(self, conn: Any, step_id: str) -> Json | None:
        raise NotImplementedError

    # -- groups and trajectories -------------------------------------------------------------------
    def _ensure_group(self, tx: Tx, group_id: str, channel: str, size: int | None, metadata: Json | None,
                      now: float) -> None:
        row = tx.one("INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at)"
                     " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (group_id) DO NOTHING RETURNING size",
                     (group_id, channel, size or 1, dumps(metadata or {}), now, now))
        if row is not None:
            tx.event("group", {"group_id": group_id, "status": "collecting", "size": size or 1}, now)
        elif size is not None and tx.one("UPDATE groups SET size = %s, updated_at = %s WHERE group_id = %s"
                                         " AND size < %s RETURNING 1", (size, now, group_id, size)):
            self._refresh_group(tx, group_id, now)

    def _lock_traj(self, tx: Tx, tid: str) -> PgTraj | None:
        row = tx.one("SELECT group_id, channel, status, next_index, last_step_id, last_seq FROM trajectories"
                     " WHERE trajectory_id = %s FOR UPDATE", (tid,))
        if row is None:
            return None
        st = PgTraj(row[0], row[1], row[2], row[3], row[4], row[5])
        if st.next_index > 0 and st.last_step_id is None:  # copied by ``steplake migrate``: no append state yet
            _, st.last_step_id, st.last_seq = self._full_seq_for(tx.conn, tid, None)
        return st

    def _open_trajectory(self, tx: Tx, tid: str, group_id: str | None, group_size: int | None,
                         channel: str | None, metadata: Json, now: float) -> PgTraj:
        gid = group_id or tid
        ch = channel or DEFAULT_CHANNEL
        self._ensure_group(tx, gid, ch, group_size, None, now)
        agent = metadata.get("agent") if isinstance(metadata.get("agent"), str) else None
        row = tx.one("INSERT INTO trajectories(trajectory_id, group_id, channel, metadata, agent, created_at, updated_at)"
                     " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (trajectory_id) DO NOTHING RETURNING seq",
                     (tid, gid, ch, dumps(metadata), agent, now, now))
        if row is None:  # another server opened it a moment ago
            st = self._lock_traj(tx, tid)
            assert st is not None
            return st
        tx.q("UPDATE groups SET n_trajectories = n_trajectories + 1 WHERE group_id = %s", (gid,))
        tx.event("trajectory", {"trajectory_id": tid, "group_id": gid, "channel": ch, "status": "open"}, now)
        return PgTraj(gid, ch, "open", 0, None, None)

    def _set_status(self, tx: Tx, tid: str, old: str, new: str, now: float, group_id: str) -> None:
        if old == new:
            return
        tx.q("UPDATE trajectories SET status = %s, updated_at = %s, completed_at = %s,"
             " last_seq = CASE WHEN %s = 'open' THEN last_seq END WHERE trajectory_id = %s",
             (new, now, now if new != "open" else None, new, tid))
        dc = (new == "complete") - (old == "complete")
        da = (new == "abandoned") - (old == "abandoned")
        tx.q("UPDATE groups SET n_complete = n_complete + %s, n_abandoned = n_abandoned + %s, updated_at = %s"
             " WHERE group_id = %s", (dc, da, now, group_id))
        tx.event("trajectory", {"trajectory_id": tid, "group_id": group_id, "status": new}, now)
        self._refresh_group(tx, group_id, now)

    def _refresh_group(self, tx: Tx, group_id: str, now: float) -> None:
        row = tx.one("SELECT status, size, n_complete, n_abandoned, channel FROM groups WHERE group_id = %s"
                     " FOR UPDATE", (group_id,))
        if row is None:
            return
        status, size, nc, na, channel = row
        ready = nc + na >= size and nc >= 1
        new = status
        if status == "collecting" and ready:
            new = "ready"
        elif status == "ready" and not ready:
            new = "collecting"
        if new != status:
            tx.q("UPDATE groups SET status = %s, ready_at = %s WHERE group_id = %s",
                 (new, now if new == "ready" else None, group_id))
            tx.event("group", {"group_id": group_id, "channel": channel, "status": new, "n_complete": nc,
                               "n_abandoned": na, "size": size}, now)

    # -- steps -------------------------------------------------------------------------------------
    def _w_append(self, tx: Tx, steps: Sequence[Step]) -> AppendResult:
        now = time.time()
        policy = tx.one("SELECT COALESCE(MAX(version), 0) FROM policy")[0]
        states: dict[str, PgTraj | None] = {tid: self._lock_traj(tx, tid)
                                            for tid in sorted({s.trajectory_id for s in steps})}
        ids = [s.step_id for s in steps]
        known: dict[str, bytes] = {r[0]: bytes(r[1]) for r in tx.all(
            "SELECT step_id, content_hash FROM steps WHERE step_id = ANY(%s)", (ids,))}
        ctx = _AppendCtx(now, policy)
        for s in steps:
            self._append_one(tx, s, states, known, ctx)
        self._flush_steps(tx, ctx)
        for tid, d in ctx.tdelta.items():
            st = states[tid]
            assert st is not None
            tx.q("UPDATE trajectories SET n_steps = n_steps + %s, next_index = GREATEST(next_index, %s),"
                 " n_tokens = n_tokens + %s, n_realigned = n_realigned + %s, n_fork = n_fork + %s, updated_at = %s,"
                 " last_finish_reason = COALESCE(%s, last_finish_reason),"
                 " last_tool_calls = COALESCE(%s, last_tool_calls), exchange_hash = COALESCE(%s, exchange_hash),"
                 " min_policy = LEAST(COALESCE(min_policy, %s), %s), max_policy = GREATEST(COALESCE(max_policy, %s), %s),"
                 " last_step_id = %s, last_seq = %s WHERE trajectory_id = %s",
                 (d["n"], d["next"], d["tokens"], d["realigned"], d["fork"], now, d["finish"], d["tools"],
                  d["xhash"], d["pmin"], d["pmin"], d["pmax"], d["pmax"], st.last_step_id, st.last_seq, tid))
        tx.count(ctx.counts)
        return ctx.res

    def _append_one(self, tx: Tx, s: Step, states: dict[str, PgTraj | None], known: dict[str, bytes],
                    ctx: _AppendCtx) -> None:
        prompt, response = ids_to_bytes(s.prompt_ids), ids_to_bytes(s.response_ids)
        logprobs = floats_to_bytes(s.response_logprobs)
        chash = step_content_hash(s, prompt, response, logprobs)
        step_id = s.step_id
        assert step_id is not None
        if step_id in known:
            if known[step_id] != chash:
                raise ConflictError(f"step {step_id!r} already exists with other content", code="step_conflict")
            ctx.res.duplicates += 1
            ctx.res.step_ids.append(step_id)
            return
        tid = s.trajectory_id
        st = states[tid]
        if st is None:
            st = states[tid] = self._open_trajectory(tx, tid, s.group_id, None, s.channel, dict(s.metadata), ctx.now)
        elif st.status == "complete":
            raise ConflictError(f"trajectory {tid!r} is complete; it takes no more steps", code="trajectory_complete")
        elif st.status == "abandoned":  # an agent came back: reopen
            self._set_status(tx, tid, "abandoned", "open", ctx.now, st.group_id)
            st.status = "open"
        if s.group_id is not None and s.group_id != st.group_id:
            raise ConflictError(f"trajectory {tid!r} belongs to group {st.group_id!r}, not {s.group_id!r}",
                                code="group_mismatch")
        if s.channel is not None and s.channel != st.channel:
            raise ConflictError(f"trajectory {tid!r} is in channel {st.channel!r}, not {s.channel!r}",
                                code="channel_mismatch")
        index = st.next_index if s.step_index is None else s.step_index
        if index > st.last_index:
            if st.last_step_id is not None and st.last_seq is None:
                self._flush_steps(tx, ctx)
                _, _, st.last_seq = self._full_seq_for(tx.conn, tid, None)
            parent_id, parent_seq = st.last_step_id, st.last_seq
        else:
            self._flush_steps(tx, ctx)
            dup = tx.one("SELECT step_id FROM steps WHERE trajectory_id = %s AND step_index = %s", (tid, index))
            if dup is not None:
                raise ConflictError(f"trajectory {tid!r} already has a step {dup[0]!r} at step_index {index}",
                                    code="step_index_conflict")
            _, parent_id, parent_seq = self._full_seq_for(tx.conn, tid, index)
        continuity, shared = classify(parent_seq, prompt)
        policy = ctx.policy if s.policy_version is None else s.policy_version
        doc = {"messages": s.messages, "tools": s.tools,
               "response": s.response.model_dump(exclude_none=True) if s.response else None,
               "sampling": s.sampling, "usage": s.usage, "metadata": s.metadata, "provenance": s.provenance}
        ctx.pending.append((step_id, tid, st.group_id, index, st.channel, policy, continuity, parent_id, shared,
                            len(prompt) // 4, len(response) // 4, prompt[shared * 4:], response,
                            logprobs, s.token_source, s.finish_reason, s.model, s.reward,
                            s.latency_ms, ctx.now, chash, dumps(doc)))
        known[step_id] = chash
        if index > st.last_index:
            st.last_step_id, st.last_seq = step_id, prompt + response
        else:
            self._flush_steps(tx, ctx)
            self._rechain_child(tx, tid, index, step_id, prompt + response)
        st.next_index = max(st.next_index, index + 1)
        ctx.account(s, tid, st, index, continuity, shared, policy, step_id, tx)

    @staticmethod
    def _flush_steps(tx: Tx, ctx: _AppendCtx) -> None:
        if not ctx.pending:
            return
        with tx.conn.cursor() as cur, cur.copy(f"COPY steps ({STEP_INSERT_COLS}) FROM STDIN") as cp:
            for row in ctx.pending:
                cp.write_row(row)
        ctx.pending.clear()

    def _rechain_child(self, tx: Tx, tid: str, index: int, step_id: str, seq: bytes) -> None:
        """A step landed before an existing later one: re-derive that child's continuity against it."""
        row = tx.one("SELECT step_id FROM steps WHERE trajectory_id = %s AND step_index > %s"
                     " ORDER BY step_index LIMIT 1", (tid, index))
        if row is None:
            return
        child = self._load_full(tx.conn, row[0])
        assert child is not None
        prompt = ids_to_bytes(child["prompt_ids"])
        continuity, shared = classify(seq, prompt)
        tx.q("UPDATE steps SET continuity = %s, parent_step_id = %s, shared_prefix_len = %s, prompt_tail = %s"
             " WHERE step_id = %s", (continuity, step_id, shared, prompt[shared * 4:], row[0]))

    # -- trajectories ------------------------------------------------------------------------------
    def _w_create_trajectory(self, tx: Tx, tid: str, group_id: str | None, group_size: int | None,
                             channel: str | None, metadata: Json) -> None:
        now = time.time()
        st = self._lock_traj(tx, tid)
        if st is None:
            st = self._open_trajectory(tx, tid, group_id, group_size, channel, metadata, now)
        elif group_size:
            self._ensure_group(tx, st.group_id, st.channel, group_size, None, now)
        if (group_id and group_id != st.group_id) or (channel and channel != st.channel):
            raise ConflictError(f"trajectory {tid!r} exists in group {st.group_id!r}, channel {st.channel!r}",
                                code="trajectory_exists")

    def _w_create_group(self, tx: Tx, group_id: str, n: int, channel: str | None, metadata: Json,
                        trajectory_ids: Sequence[str]) -> None:
        now = time.time()
        if tx.one("SELECT 1 FROM groups WHERE group_id = %s", (group_id,)):
            raise ConflictError(f"group {group_id!r} already exists", code="group_exists")
        self._ensure_group(tx, group_id, channel or DEFAULT_CHANNEL, n, metadata, now)
        for tid in trajectory_ids:
            self._w_create_trajectory(tx, tid, group_id, None, channel, dict(metadata))

    def _w_complete(self, tx: Tx, tid: str, reward: float | None, metadata: Json | None) -> None:
        now = time.time()
        row = tx.one("SELECT status, group_id, metadata FROM trajectories WHERE trajectory_id = %s FOR UPDATE", (tid,))
        if row is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        if metadata:
            merged = dict(loads(row[2]) or {})  # type: ignore[call-overload]
            merged.update(metadata)
            tx.q("UPDATE trajectories SET metadata = %s WHERE trajectory_id = %s", (dumps(merged), tid))
        if reward is not None:
            tx.q("UPDATE trajectories SET explicit_reward = %s WHERE trajectory_id = %s", (reward, tid))
            self._recompute_reward(tx, tid)
        self._set_status(tx, tid, row[0], "complete", now, row[1])

    def _w_sweep(self, tx: Tx, idle_timeout: float, now: float) -> int:
        rows = tx.all("SELECT trajectory_id, group_id, last_finish_reason, last_tool_calls FROM trajectories"
                      " WHERE status = 'open' AND updated_at < %s ORDER BY trajectory_id LIMIT 5000"
                      " FOR UPDATE SKIP LOCKED", (now - idle_timeout,))
        n = 0
        for tid, gid, finish, tools in rows:
            if not (_try_lock(tx, tid) and _try_lock(tx, gid)):
                continue  # an append holds it: it is not idle; the next sweep looks again
            new = "complete" if finish == "stop" and not tools else "abandoned"
            self._set_status(tx, tid, "open", new, now, gid)
            n += 1
        return n

    def _w_delete(self, tx: Tx, tid: str) -> bool:
        row = tx.one("SELECT status, group_id FROM trajectories WHERE trajectory_id = %s FOR UPDATE", (tid,))
        if row is None:
            return False
        status, gid = row
        sids = [r[0] for r in tx.all("SELECT step_id FROM steps WHERE trajectory_id = %s", (tid,))]
        targets = [tid, *sids]
        tx.q("DELETE FROM curation_history WHERE target_id = ANY(%s)", (targets,))
        tx.q("DELETE FROM rewards WHERE trajectory_id = %s OR step_id = ANY(%s)", (tid, sids))
        tx.q("DELETE FROM feedback WHERE trajectory_id = %s OR step_id = ANY(%s)", (tid, sids))
        tx.q("DELETE FROM steps WHERE trajectory_id = %s", (tid,))
        tx.q("DELETE FROM trajectories WHERE trajectory_id = %s", (tid,))
        tx.q("UPDATE groups SET n_trajectories = n_trajectories - 1, n_complete = n_complete - %s,"
             " n_abandoned = n_abandoned - %s WHERE group_id = %s",
             (int(status == "complete"), int(status == "abandoned"), gid))
        tx.count({"steps": -len(sids)})
        tx.event("trajectory", {"trajectory_id": tid, "group_id": gid, "status": "deleted"}, time.time())
        return True

    # -- rewards, feedback, policy, keys -----------------------------------------------------------
    def _recompute_reward(self, tx: Tx, tid: str) -> None:
        rows = tx.all("SELECT name, value, version FROM rewards WHERE trajectory_id = %s AND step_id IS NULL"
                      " ORDER BY id", (tid,))
        comps: dict[str, Json] = {}
        for name, value, version in rows:  # the latest value of each name wins
            comps[name] = {"value": value, "version": version}
        explicit = tx.one("SELECT explicit_reward FROM trajectories WHERE trajectory_id = %s", (tid,))[0]
        reward: float | None = None
        if explicit is not None:
            reward = explicit
        elif comps:
            reward = sum(self.reward_weights.get(n, 1.0) * c["value"] for n, c in comps.items()
                         if self.reward_weights.get(n, 1.0) != 0)
        tx.q("UPDATE trajectories SET reward = %s, reward_components = %s WHERE trajectory_id = %s",
             (reward, dumps(comps), tid))

    def _target_trajectory(self, tx: Tx, tid: str | None, step_id: str | None) -> str:
        """The trajectory a reward/feedback lands on, its row locked."""
        if step_id is not None:
            row = tx.one("SELECT trajectory_id FROM steps WHERE step_id = %s", (step_id,))
            if row is None:
                raise NotFoundError(f"step {step_id!r} not found", code="step_not_found")
            tid = row[0]
        assert tid is not None
        if tx.one("SELECT 1 FROM trajectories WHERE trajectory_id = %s FOR UPDATE", (tid,)) is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        return tid

    def _w_add_reward(self, tx: Tx, r: RewardIn) -> Json:
        now = time.time()
        tid = self._target_trajectory(tx, r.trajectory_id, r.step_id)
        if r.step_id is not None:
            tx.q("UPDATE steps SET reward = %s WHERE step_id = %s", (r.value, r.step_id))
        rid = tx.one("INSERT INTO rewards(trajectory_id, step_id, name, value, version, details, created_at)"
                     " VALUES (%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                     (tid, r.step_id, r.name, r.value, r.version, dumps(r.details), now))[0]
        if r.step_id is None:
            self._recompute_reward(tx, tid)
        out = {"id": rid, "trajectory_id": tid, "step_id": r.step_id, "name": r.name, "value": r.value,
               "version": r.version, "details": r.details, "created_at": now}
        tx.event("reward", out, now)
        return out

    def _w_feedback(self, tx: Tx, f: FeedbackIn) -> Json:
        now = time.time()
        tid = self._target_trajectory(tx, f.trajectory_id, f.step_id)
        fid = tx.one("INSERT INTO feedback(trajectory_id, step_id, kind, value, comment, author, created_at)"
                     " VALUES (%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                     (tid, f.step_id, f.kind, dumps(f.value), f.comment, f.author, now))[0]
        out = {"id": fid, "trajectory_id": tid, "step_id": f.step_id, "kind": f.kind, "value": f.value,
               "comment": f.comment, "author": f.author, "created_at": now}
        tx.event("feedback", out, now)
        return out

    def _w_curate(self, tx: Tx, c: CurationIn, traj_ids: list[str]) -> int:
        now = time.time()
        change = c.model_dump(include={"quality", "trainable", "tags_add", "tags_remove", "note"}, exclude_none=True)
        targets = [("step", i) for i in (c.step_ids or [])] + [("trajectory", i) for i in traj_ids]
        for kind, tid in targets:
            table, key = ("steps", "step_id") if kind == "step" else ("trajectories", "trajectory_id")
            row = tx.one(f"SELECT quality, trainable, tags, note FROM {table} WHERE {key} = %s FOR UPDATE", (tid,))
            if row is None:
                raise NotFoundError(f"{kind} {tid!r} not found", code=f"{kind}_not_found")
            tags = list(loads(row[2]) or [])  # type: ignore[call-overload]
            for t in c.tags_add or []:
                if t not in tags:
                    tags.append(t)
            tags = [t for t in tags if t not in set(c.tags_remove or [])]
            before = {"quality": row[0], "trainable": bool(row[1]), "tags": loads(row[2]) or [], "note": row[3]}
            tx.q(f"UPDATE {table} SET quality = %s, trainable = %s, tags = %s, note = %s, reviewer = %s,"
                 f" curated_at = %s WHERE {key} = %s",
                 (c.quality or row[0], row[1] if c.trainable is None else int(c.trainable), dumps(tags),
                  row[3] if c.note is None else c.note, c.reviewer, now, tid))
            tx.q("INSERT INTO curation_history(target_kind, target_id, change, before, reviewer, at)"
                 " VALUES (%s,%s,%s,%s,%s,%s)", (kind, tid, dumps(change), dumps(before), c.reviewer, now))
        tx.event("curation", {"n": len(targets), "step_ids": (c.step_ids or [])[:100], "trajectory_ids": traj_ids[:100],
                              "change": change, "reviewer": c.reviewer}, now)
        return len(targets)

    def _w_publish_policy(self, tx: Tx, lock_key: int, version: int, weights_path: str | None,
                          note: str | None) -> Json:
        tx.q("SELECT pg_advisory_xact_lock(%s)", (lock_key,))  # versions increase across servers too
        cur = tx.one("SELECT MAX(version) FROM policy")[0]
        if cur is not None and version <= cur:
            raise ConflictError(f"policy version must increase: current is {cur}, got {version}",
                                code="policy_version_not_increasing")
        now = time.time()
        tx.q("INSERT INTO policy(version, weights_path, note, created_at) VALUES (%s,%s,%s,%s)",
             (version, weights_path, note, now))
        out = {"version": version, "weights_path": weights_path, "note": note, "created_at": now}
        tx.event("policy", out, now)
        return out

    @staticmethod
    def _w_create_key(tx: Tx, scope: str, name: str | None) -> tuple[str, str, float]:
        secret = f"sl-{scope}-{secrets.token_urlsafe(32)}"
        key_id = f"key_{secrets.token_hex(6)}"
        now = time.time()
        tx.q("INSERT INTO keys(key_id, secret_hash, scope, name, created_at) VALUES (%s,%s,%s,%s,%s)",
             (key_id, hash_secret(secret), scope, name, now))
        return key_id, secret, now


def _try_lock(tx: Tx, key: str) -> bool:
    return bool(tx.one("SELECT pg_try_advisory_xact_lock(%s)", (lock_key("steplake-t", tx.env.schema, key),))[0])


class _AppendCtx:
    """Per-call accumulators of ``_w_append``."""

    def __init__(self, now: float, policy: int) -> None:
        self.now = now
        self.policy = policy
        self.pending: list[tuple[Any, ...]] = []
        self.tdelta: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {"steps": 0, "prompt_tokens": 0, "response_tokens": 0}
        self.res = AppendResult(accepted=0)

    def account(self, s: Step, tid: str, st: PgTraj, index: int, continuity: str, shared: int, policy: int,
                step_id: str, tx: Tx) -> None:
        d = self.tdelta.setdefault(tid, {"n": 0, "next": 0, "tokens": 0, "realigned": 0, "fork": 0, "finish": None,
                                         "tools": None, "xhash": None, "pmin": policy, "pmax": policy})
        d["n"] += 1
        d["next"] = max(d["next"], index + 1)
        d["tokens"] += len(s.prompt_ids) - shared + len(s.response_ids)
        d["realigned"] += continuity == "realigned"
        d["fork"] += continuity == "fork"
        if index + 1 >= st.next_index:
            d["finish"], d["tools"] = s.finish_reason, int(bool(s.response and s.response.tool_calls))
            d["xhash"] = s.provenance.get("exchange_hash") or d["xhash"]
        d["pmin"], d["pmax"] = min(d["pmin"], policy), max(d["pmax"], policy)
        c = self.counts
        c["steps"] += 1
        c[f"continuity_{continuity}"] = c.get(f"continuity_{continuity}", 0) + 1
        c["prompt_tokens"] += len(s.prompt_ids)
        c["response_tokens"] += len(s.response_ids)
        tx.event("step", {"step_id": step_id, "trajectory_id": tid, "group_id": st.group_id, "step_index": index,
                          "continuity": continuity, "channel": st.channel}, self.now)
        self.res.accepted += 1
        self.res.step_ids.append(step_id)


__all__ = ["PgWrites", "PgTraj"]
