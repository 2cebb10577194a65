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
from ..records import DEFAULT_CHANNEL, CurationIn, FeedbackIn, RewardIn
from ..rules.curation import CurationState, apply_curation, curation_change, curation_event, merge_metadata
from ..rules.rewards import latest_components, trajectory_reward
from ..rules.status import completed_at, group_status_after, idle_cutoff, idle_outcome, status_deltas
from .base import Json
from .codec import dumps, loads
from .postgres_tx import Tx, lock_key
from .sqlite_writes import hash_secret

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
             (new, now, completed_at(new, now), new, tid))
        dc, da = status_deltas(old, new)
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
        new = group_status_after(status, size, nc, na)
        if new != status:
            tx.q("UPDATE groups SET status = %s, ready_at = %s WHERE group_id = %s",
                 (new, now if new == "ready" else None, group_id))
            tx.event("group", {"group_id": group_id, "channel": channel, "status": new, "n_complete": nc,
                               "n_abandoned": na, "size": size}, now)

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
            merged = merge_metadata(loads(row[2]), metadata)
            tx.q("UPDATE trajectories SET metadata = %s WHERE trajectory_id = %s", (dumps(merged), tid))
        if reward is not None:
            tx.q("UPDATE trajectories SET explicit_reward = %s WHERE trajectory_id = %s", (reward, tid))
            self._recompute_reward(tx, tid)
        self._set_status(tx, tid, row[0], "complete", now, row[1])

    def _w_sweep(self, tx: Tx, idle_timeout: float, now: float) -> int:
        rows = tx.all("SELECT trajectory_id, group_id, last_finish_reason, last_tool_calls FROM trajectories"
                      " WHERE status = 'open' AND updated_at < %s ORDER BY trajectory_id LIMIT 5000"
                      " FOR UPDATE SKIP LOCKED", (idle_cutoff(now, idle_timeout),))
        n = 0
        for tid, gid, finish, tools in rows:
            if not (_try_lock(tx, tid) and _try_lock(tx, gid)):
                continue  # an append holds it: it is not idle; the next sweep looks again
            self._set_status(tx, tid, "open", idle_outcome(finish, tools), now, gid)
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
        tx.q("DELETE FROM step_text WHERE trajectory_id = %s", (tid,))
        tx.q("DELETE FROM reward_claims WHERE trajectory_id = %s", (tid,))
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
        comps = latest_components(rows)
        explicit = tx.one("SELECT explicit_reward FROM trajectories WHERE trajectory_id = %s", (tid,))[0]
        reward = trajectory_reward(explicit, comps, self.reward_weights)
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
        change = curation_change(c)
        targets = [("step", i) for i in (c.step_ids or [])] + [("trajectory", i) for i in traj_ids]
        for kind, tid in targets:
            table, key = ("steps", "step_id") if kind == "step" else ("trajectories", "trajectory_id")
            row = tx.one(f"SELECT quality, trainable, tags, note FROM {table} WHERE {key} = %s FOR UPDATE", (tid,))
            if row is None:
                raise NotFoundError(f"{kind} {tid!r} not found", code=f"{kind}_not_found")
            before = CurationState.stored(row[0], row[1], loads(row[2]), row[3])
            after = apply_curation(before, c)
            tx.q(f"UPDATE {table} SET quality = %s, trainable = %s, tags = %s, note = %s, reviewer = %s,"
                 f" curated_at = %s WHERE {key} = %s",
                 (after.quality, int(after.trainable), dumps(after.tags), after.note, c.reviewer, now, tid))
            tx.q("INSERT INTO curation_history(target_kind, target_id, change, before, reviewer, at)"
                 " VALUES (%s,%s,%s,%s,%s,%s)", (kind, tid, dumps(change), dumps(before.as_record()), c.reviewer, now))
        tx.event("curation", curation_event(c, traj_ids, len(targets), change), now)
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
    def _w_create_key(tx: Tx, scope: str, name: str | None, binding: Json | None = None) -> tuple[str, str, float]:
        secret = f"sl-{scope}-{secrets.token_urlsafe(32)}"
        key_id = f"key_{secrets.token_hex(6)}"
        now = time.time()
        tx.q("INSERT INTO keys(key_id, secret_hash, scope, name, created_at, binding) VALUES (%s,%s,%s,%s,%s,%s)",
             (key_id, hash_secret(secret), scope, name, now, dumps(binding) if binding is not None else None))
        return key_id, secret, now


def _try_lock(tx: Tx, key: str) -> bool:
    return bool(tx.one("SELECT pg_try_advisory_xact_lock(%s)", (lock_key("steplake-t", tx.env.schema, key),))[0])


__all__ = ["PgWrites", "PgTraj"]
