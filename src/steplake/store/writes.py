"""Writes both stores make the same way, written once in the dialect's SQL (store/dialect.py) on a write
transaction handle (``WriteTx``: store/writer.py ``SqliteTx`` on the SQLite writer thread, ``Tx`` of
store/postgres_tx.py on PostgreSQL). The rules they apply are steplake.rules'.

A backend provides ``_tx(fn, keys)`` (run ``fn(tx)`` in a committed write; ``keys``: the trajectories and
groups it changes, which PostgreSQL locks first) and the few hooks below where the backends really differ:
``_traj_keys`` (PostgreSQL reads a trajectory's group to lock it), ``_find_trajectory`` / ``_opened_state``
(each backend's append state of a trajectory), ``_forget_trajectory`` (SQLite's writer cache),
``_claim_idle`` and ``_lock_policy`` (PostgreSQL's locks between servers), ``_steps_clause`` (how a
trajectory's steps are named in a DELETE) and ``_closed_sets`` (what a trajectory clears when it closes).
Appends and batch selection are per backend (store/sqlite_writes.py, store/postgres_append.py,
store/selection.py)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

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
from ..types import Json
from . import claims
from .base import KeyRecord
from .claims import ClaimKey
from .codec import dumps, ids_to_bytes, loads
from .dialect import Dialect
from .keys import check_binding, hash_secret


class WriteTx(Protocol):
    """One open write transaction."""

    conn: Any  # the driver's connection (reads of store/reads.py run on it too)

    def q(self, sql: str, args: Any = ()) -> Any: ...  # execute: a cursor (``rowcount``, ``fetchone``)
    def one(self, sql: str, args: Any = ()) -> Any: ...
    def all(self, sql: str, args: Any = ()) -> list[Any]: ...
    def event(self, kind: str, data: Json, now: float) -> None: ...
    def count(self, deltas: dict[str, int]) -> None: ...


class TrajRef(Protocol):
    """What the shared writes read of a trajectory's append state (each backend keeps its own)."""

    group_id: str
    channel: str
    status: str


class StoreWrites:
    dialect: ClassVar[Dialect]
    _closed_sets: ClassVar[str] = ""  # ", col = NULL" for columns a trajectory clears when it stops being open
    reward_weights: dict[str, float]

    # -- what the backend provides ------------------------------------------------------------------
    def _tx(self, fn: Callable[[Any], Any], keys: Sequence[str] = ()) -> Any:
        raise NotImplementedError  # the backend's committed write

    def _traj_keys(self, trajectory_id: str | None, step_id: str | None = None) -> list[str]:
        return []  # lock keys of a trajectory and its group (PostgreSQL)

    def _find_trajectory(self, tx: WriteTx, tid: str) -> TrajRef | None:
        raise NotImplementedError  # an existing trajectory (PostgreSQL: its row locked)

    def _opened_state(self, group_id: str, channel: str) -> TrajRef:
        raise NotImplementedError  # the append state of a trajectory just opened

    def _forget_trajectory(self, tid: str) -> None:
        """Drop what the backend caches of a trajectory whose status changed outside an append."""

    def _claim_idle(self, tx: WriteTx, tid: str, group_id: str) -> bool:
        return True  # PostgreSQL: False when an append holds the trajectory (it is not idle)

    def _lock_policy(self, tx: WriteTx) -> None:
        """Serialize policy publishes (PostgreSQL: across servers)."""

    def _steps_clause(self, tx: WriteTx, tid: str) -> tuple[str, list[Any], int]:
        raise NotImplementedError  # (``IN (...)`` / ``= ANY(...)`` naming the trajectory's step ids, args, count)

    def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json | None:
        raise NotImplementedError  # store/reads.py

    def get_group(self, group_id: str) -> Json | None:
        raise NotImplementedError  # store/reads.py

    def get_batch(self, batch_id: str) -> Json | None:
        raise NotImplementedError  # store/reads.py

    def _one(self, sql: str, args: Any = ()) -> Any:
        raise NotImplementedError  # store/reads.py

    def _load_full(self, conn: Any, step_id: str) -> Json | None:
        raise NotImplementedError  # store/reads.py

    # -- trajectories and groups (Store API) ----------------------------------------------------------
    def create_trajectory(self, trajectory_id: str, group_id: str | None, group_size: int | None,
                          channel: str | None, metadata: Json) -> Json:
        self._tx(lambda tx: self._w_create_trajectory(tx, trajectory_id, group_id, group_size, channel, metadata),
                 [trajectory_id, group_id or trajectory_id, *self._traj_keys(trajectory_id)])
        t = self.get_trajectory(trajectory_id, with_steps=False)
        assert t is not None
        return t

    def create_group(self, group_id: str, n: int, channel: str | None, metadata: Json,
                     trajectory_ids: Sequence[str]) -> Json:
        self._tx(lambda tx: self._w_create_group(tx, group_id, n, channel, metadata, trajectory_ids),
                 [group_id, *trajectory_ids])
        g = self.get_group(group_id)
        assert g is not None
        return g

    def complete_trajectory(self, trajectory_id: str, reward: float | None, metadata: Json | None = None) -> Json:
        self._tx(lambda tx: self._w_complete(tx, trajectory_id, reward, metadata), self._traj_keys(trajectory_id))
        t = self.get_trajectory(trajectory_id, with_steps=False)
        assert t is not None
        return t

    def delete_trajectory(self, trajectory_id: str) -> bool:
        return bool(self._tx(lambda tx: self._w_delete(tx, trajectory_id), self._traj_keys(trajectory_id)))

    def sweep_idle(self, idle_timeout: float, now: float | None = None) -> int:
        t = time.time() if now is None else now
        if self._one(self.dialect.sql("SELECT 1 FROM trajectories WHERE status = 'open' AND updated_at < ? LIMIT 1"),
                     (t - idle_timeout,)) is None:
            return 0
        return int(self._tx(lambda tx: self._w_sweep(tx, idle_timeout, t)))

    # -- rewards, curation, feedback (Store API) -----------------------------------------------------
    def add_reward(self, reward: RewardIn) -> Json:
        keys = self._traj_keys(reward.trajectory_id, reward.step_id)
        return self._tx(lambda tx: self._w_add_reward(tx, reward), keys)  # type: ignore[no-any-return]

    def claim_rewards(self, keys: Sequence[ClaimKey], owner: str, stale_after: float,
                      now: float | None = None) -> list[ClaimKey]:
        t = time.time() if now is None else now
        ph = self.dialect.ph
        return self._tx(lambda tx: claims.claim(tx.q, ph, keys, owner, stale_after, t))  # type: ignore[no-any-return]

    def settle_rewards(self, keys: Sequence[ClaimKey], owner: str, done: bool) -> None:
        ph = self.dialect.ph
        self._tx(lambda tx: claims.settle(tx.q, ph, keys, owner, done, time.time()))

    def curate(self, change: CurationIn) -> int:
        tids = list(change.trajectory_ids or [])
        if change.filter is not None:
            tids += self.trajectory_ids_matching(change.filter.model_dump(exclude_none=True))
        tids = list(dict.fromkeys(tids))
        return int(self._tx(lambda tx: self._w_curate(tx, change, tids), tids))

    def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]:
        raise NotImplementedError  # store/reads.py

    def add_feedback(self, feedback: FeedbackIn) -> Json:
        keys = self._traj_keys(feedback.trajectory_id, feedback.step_id)
        return self._tx(lambda tx: self._w_feedback(tx, feedback), keys)  # type: ignore[no-any-return]

    # -- batches, policy, keys (Store API) --------------------------------------------------------------
    def record_batch_details(self, batch_id: str, details: Json) -> None:
        sql = self.dialect.sql("UPDATE batches SET details = ? WHERE batch_id = ?")
        self._tx(lambda tx: tx.q(sql, (dumps(details), batch_id)))

    def ack_batch(self, batch_id: str) -> Json:
        self._tx(lambda tx: self._w_ack_batch(tx, batch_id))
        b = self.get_batch(batch_id)
        assert b is not None
        return b

    def publish_policy(self, version: int, weights_path: str | None, note: str | None) -> Json:
        return self._tx(lambda tx: self._w_publish_policy(tx, version, weights_path, note))  # type: ignore[no-any-return]

    def create_key(self, scope: str, name: str | None, binding: Json | None = None) -> tuple[KeyRecord, str]:
        bound = check_binding(scope, binding)
        key_id, secret, now = self._tx(lambda tx: self._w_create_key(tx, scope, name, bound))
        return KeyRecord(key_id, scope, name, now, binding=bound), secret

    def rebind_key(self, key_id: str, binding: Json) -> bool:
        bound = check_binding("agent", binding)
        sql = self.dialect.sql("UPDATE keys SET binding = ? WHERE key_id = ? AND binding IS NOT NULL")
        return bool(self._tx(lambda tx: tx.q(sql, (dumps(bound), key_id)).rowcount > 0))

    def revoke_key(self, key_id: str) -> bool:
        sql = self.dialect.sql("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL")
        return bool(self._tx(lambda tx: tx.q(sql, (time.time(), key_id)).rowcount > 0))

    # -- groups ---------------------------------------------------------------------------------------
    def _ensure_group(self, tx: WriteTx, group_id: str, channel: str, size: int | None, metadata: Json | None,
                      now: float) -> None:
        """The group exists afterwards, at least ``size`` large when a size is given."""
        d = self.dialect
        row = tx.one(d.sql("INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at)"
                           " VALUES (?,?,?,?,?,?) ON CONFLICT (group_id) DO NOTHING RETURNING size"),
                     (group_id, channel, size or 1, dumps(metadata or {}), now, now))
        if row is not None:
            tx.event("group", {"group_id": group_id, "status": "collecting", "size": size or 1}, now)
        elif size is not None and tx.one(d.sql("UPDATE groups SET size = ?, updated_at = ? WHERE group_id = ?"
                                               " AND size < ? RETURNING 1"), (size, now, group_id, size)):
            self._refresh_group(tx, group_id, now)

    def _refresh_group(self, tx: WriteTx, group_id: str, now: float) -> None:
        """The group's status after its counts changed (rules.status.group_status_after)."""
        d = self.dialect
        row = tx.one(d.sql("SELECT status, size, n_complete, n_abandoned, channel FROM groups WHERE group_id = ?")
                     + d.for_update, (group_id,))
        if row is None:
            return
        status, size, nc, na, channel = row
        new = group_status_after(status, size, nc, na)
        if new != status:
            tx.q(d.sql("UPDATE groups SET status = ?, ready_at = ? WHERE group_id = ?"),
                 (new, now if new == "ready" else None, group_id))
            tx.event("group", {"group_id": group_id, "channel": channel, "status": new, "n_complete": nc,
                               "n_abandoned": na, "size": size}, now)

    def _w_create_group(self, tx: WriteTx, group_id: str, n: int, channel: str | None, metadata: Json,
                        trajectory_ids: Sequence[str]) -> None:
        now = time.time()
        if tx.one(self.dialect.sql("SELECT 1 FROM groups WHERE group_id = ?"), (group_id,)):
            raise ConflictError(f"group {group_id!r} already exists", code="group_exists")
        self._ensure_group(tx, group_id, channel or DEFAULT_CHANNEL, n, metadata, now)
        for tid in trajectory_ids:
            self._w_create_trajectory(tx, tid, group_id, None, channel, dict(metadata))

    # -- trajectories ---------------------------------------------------------------------------------
    def _open_trajectory(self, tx: WriteTx, tid: str, group_id: str | None, group_size: int | None,
                         channel: str | None, metadata: Json, now: float) -> TrajRef:
        d = self.dialect
        gid = group_id or tid
        ch = channel or DEFAULT_CHANNEL
        self._ensure_group(tx, gid, ch, group_size, None, now)
        agent = metadata.get("agent") if isinstance(metadata.get("agent"), str) else None
        row = tx.one(d.sql("INSERT INTO trajectories(trajectory_id, group_id, channel, metadata, agent, created_at,"
                           " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (trajectory_id) DO NOTHING RETURNING seq"),
                     (tid, gid, ch, dumps(metadata), agent, now, now))
        if row is None:  # another server opened it a moment ago
            st = self._find_trajectory(tx, tid)
            assert st is not None
            return st
        tx.q(d.sql("UPDATE groups SET n_trajectories = n_trajectories + 1 WHERE group_id = ?"), (gid,))
        tx.event("trajectory", {"trajectory_id": tid, "group_id": gid, "channel": ch, "status": "open"}, now)
        return self._opened_state(gid, ch)

    def _w_create_trajectory(self, tx: WriteTx, tid: str, group_id: str | None, group_size: int | None,
                             channel: str | None, metadata: Json) -> None:
        now = time.time()
        st = self._find_trajectory(tx, tid)
        if st is None:
            st = self._open_trajectory(tx, tid, group_id, group_size, channel, metadata, now)
        elif group_size:
            self._ensure_group(tx, st.group_id, st.channel, group_size, None, now)
        if (group_id and group_id != st.group_id) or (channel and channel != st.channel):
            raise ConflictError(f"trajectory {tid!r} exists in group {st.group_id!r}, channel {st.channel!r}",
                                code="trajectory_exists")

    def _set_status(self, tx: WriteTx, tid: str, old: str, new: str, now: float, group_id: str) -> None:
        if old == new:
            return
        d = self.dialect
        closes = "" if new == "open" else self._closed_sets
        tx.q(d.sql(f"UPDATE trajectories SET status = ?, updated_at = ?, completed_at = ?{closes}"
                   " WHERE trajectory_id = ?"), (new, now, completed_at(new, now), tid))
        dc, da = status_deltas(old, new)
        tx.q(d.sql("UPDATE groups SET n_complete = n_complete + ?, n_abandoned = n_abandoned + ?, updated_at = ?"
                   " WHERE group_id = ?"), (dc, da, now, group_id))
        tx.event("trajectory", {"trajectory_id": tid, "group_id": group_id, "status": new}, now)
        self._refresh_group(tx, group_id, now)

    def _admit_step(self, tx: WriteTx, s: Step, st: TrajRef, now: float) -> None:
        """A step may join this existing trajectory (rules.status.check_step_fits); an abandoned one reopens."""
        if check_step_fits(s, st.status, st.group_id, st.channel):  # an agent came back: reopen
            self._set_status(tx, s.trajectory_id, "abandoned", "open", now, st.group_id)
            st.status = "open"

    def _rechain_child(self, tx: WriteTx, tid: str, index: int, step_id: str, seq: bytes) -> None:
        """A step landed before an existing later one: re-derive that child's continuity against it."""
        d = self.dialect
        row = tx.one(d.sql("SELECT step_id FROM steps WHERE trajectory_id = ? AND step_index > ?"
                           " ORDER BY step_index LIMIT 1"), (tid, index))
        if row is None:
            return
        child = self._load_full(tx.conn, row[0])
        assert child is not None
        prompt = ids_to_bytes(child["prompt_ids"])
        continuity, shared = classify(seq, prompt)
        tx.q(d.sql("UPDATE steps SET continuity = ?, parent_step_id = ?, shared_prefix_len = ?, prompt_tail = ?"
                   " WHERE step_id = ?"), (continuity, step_id, shared, prompt[shared * 4:], row[0]))

    def _w_complete(self, tx: WriteTx, tid: str, reward: float | None, metadata: Json | None) -> None:
        d = self.dialect
        now = time.time()
        row = tx.one(d.sql("SELECT status, group_id, metadata FROM trajectories WHERE trajectory_id = ?")
                     + d.for_update, (tid,))
        if row is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        if metadata:
            merged = merge_metadata(loads(row[2]), metadata)
            tx.q(d.sql("UPDATE trajectories SET metadata = ? WHERE trajectory_id = ?"), (dumps(merged), tid))
        if reward is not None:
            tx.q(d.sql("UPDATE trajectories SET explicit_reward = ? WHERE trajectory_id = ?"), (reward, tid))
            self._recompute_reward(tx, tid)
        self._set_status(tx, tid, row[0], "complete", now, row[1])
        self._forget_trajectory(tid)

    def _w_sweep(self, tx: WriteTx, idle_timeout: float, now: float) -> int:
        """Close up to 5000 idle open trajectories (rules.status.idle_outcome); returns how many."""
        d = self.dialect
        rows = tx.all(d.sql("SELECT trajectory_id, group_id, last_finish_reason, last_tool_calls FROM trajectories"
                            f" WHERE status = 'open' AND updated_at < ?{d.lock_order('trajectory_id')} LIMIT 5000")
                      + d.skip_locked, (idle_cutoff(now, idle_timeout),))
        n = 0
        for tid, gid, finish, tools in rows:
            if not self._claim_idle(tx, tid, gid):
                continue  # an append holds it: it is not idle; the next sweep looks again
            self._set_status(tx, tid, "open", idle_outcome(finish, tools), now, gid)
            self._forget_trajectory(tid)
            n += 1
        return n

    def _w_delete(self, tx: WriteTx, tid: str) -> bool:
        """The trajectory with its steps, search text, curation, rewards, claims and feedback."""
        d = self.dialect
        row = tx.one(d.sql("SELECT status, group_id FROM trajectories WHERE trajectory_id = ?") + d.for_update, (tid,))
        if row is None:
            return False
        status, gid = row
        steps, step_args, n = self._steps_clause(tx, tid)
        tx.q(d.sql(f"DELETE FROM curation_history WHERE target_id = ? OR target_id {steps}"), (tid, *step_args))
        tx.q(d.sql(f"DELETE FROM rewards WHERE trajectory_id = ? OR step_id {steps}"), (tid, *step_args))
        tx.q(d.sql(f"DELETE FROM feedback WHERE trajectory_id = ? OR step_id {steps}"), (tid, *step_args))
        tx.q(d.sql(f"DELETE FROM step_text WHERE {d.rowid} IN (SELECT seq FROM steps WHERE trajectory_id = ?)"),
             (tid,))
        tx.q(d.sql(claims.DELETE_FOR_TRAJECTORY), (tid,))
        tx.q(d.sql("DELETE FROM steps WHERE trajectory_id = ?"), (tid,))
        tx.q(d.sql("DELETE FROM trajectories WHERE trajectory_id = ?"), (tid,))
        tx.q(d.sql("UPDATE groups SET n_trajectories = n_trajectories - 1, n_complete = n_complete - ?,"
                   " n_abandoned = n_abandoned - ? WHERE group_id = ?"),
             (int(status == "complete"), int(status == "abandoned"), gid))
        tx.count({"steps": -n})
        tx.event("trajectory", {"trajectory_id": tid, "group_id": gid, "status": "deleted"}, time.time())
        self._forget_trajectory(tid)
        return True

    # -- rewards, feedback, curation ------------------------------------------------------------------
    def _recompute_reward(self, tx: WriteTx, tid: str) -> None:
        d = self.dialect
        rows = tx.all(d.sql("SELECT name, value, version FROM rewards WHERE trajectory_id = ? AND step_id IS NULL"
                            " ORDER BY id"), (tid,))
        comps = latest_components(rows)
        explicit = tx.one(d.sql("SELECT explicit_reward FROM trajectories WHERE trajectory_id = ?"), (tid,))[0]
        reward = trajectory_reward(explicit, comps, self.reward_weights)
        tx.q(d.sql("UPDATE trajectories SET reward = ?, reward_components = ? WHERE trajectory_id = ?"),
             (reward, dumps(comps), tid))

    def _target_trajectory(self, tx: WriteTx, tid: str | None, step_id: str | None) -> str:
        """The trajectory a reward / feedback lands on (PostgreSQL: its row locked)."""
        d = self.dialect
        if step_id is not None:
            row = tx.one(d.sql("SELECT trajectory_id FROM steps WHERE step_id = ?"), (step_id,))
            if row is None:
                raise NotFoundError(f"step {step_id!r} not found", code="step_not_found")
            tid = row[0]
        assert tid is not None
        if tx.one(d.sql("SELECT 1 FROM trajectories WHERE trajectory_id = ?") + d.for_update, (tid,)) is None:
            raise NotFoundError(f"trajectory {tid!r} not found", code="trajectory_not_found")
        return tid

    def _w_add_reward(self, tx: WriteTx, r: RewardIn) -> Json:
        d = self.dialect
        now = time.time()
        tid = self._target_trajectory(tx, r.trajectory_id, r.step_id)
        if r.step_id is not None:
            tx.q(d.sql("UPDATE steps SET reward = ? WHERE step_id = ?"), (r.value, r.step_id))
        rid = tx.one(d.sql("INSERT INTO rewards(trajectory_id, step_id, name, value, version, details, created_at)"
                           " VALUES (?,?,?,?,?,?,?) RETURNING id"),
                     (tid, r.step_id, r.name, r.value, r.version, dumps(r.details), now))[0]
        if r.step_id is None:
            self._recompute_reward(tx, tid)
        out = {"id": rid, "trajectory_id": tid, "step_id": r.step_id, "name": r.name, "value": r.value,
               "version": r.version, "details": r.details, "created_at": now}
        tx.event("reward", out, now)
        return out

    def _w_feedback(self, tx: WriteTx, f: FeedbackIn) -> Json:
        now = time.time()
        tid = self._target_trajectory(tx, f.trajectory_id, f.step_id)
        fid = tx.one(self.dialect.sql("INSERT INTO feedback(trajectory_id, step_id, kind, value, comment, author,"
                                      " created_at) VALUES (?,?,?,?,?,?,?) RETURNING id"),
                     (tid, f.step_id, f.kind, dumps(f.value), f.comment, f.author, now))[0]
        out = {"id": fid, "trajectory_id": tid, "step_id": f.step_id, "kind": f.kind, "value": f.value,
               "comment": f.comment, "author": f.author, "created_at": now}
        tx.event("feedback", out, now)
        return out

    def _w_curate(self, tx: WriteTx, c: CurationIn, traj_ids: list[str]) -> int:
        d = self.dialect
        now = time.time()
        change = curation_change(c)
        targets = [("step", i) for i in (c.step_ids or [])] + [("trajectory", i) for i in traj_ids]
        for kind, tid in targets:
            table, key = ("steps", "step_id") if kind == "step" else ("trajectories", "trajectory_id")
            row = tx.one(d.sql(f"SELECT quality, trainable, tags, note FROM {table} WHERE {key} = ?") + d.for_update,
                         (tid,))
            if row is None:
                raise NotFoundError(f"{kind} {tid!r} not found", code=f"{kind}_not_found")
            before = CurationState.stored(row[0], row[1], loads(row[2]), row[3])
            after = apply_curation(before, c)
            tx.q(d.sql(f"UPDATE {table} SET quality = ?, trainable = ?, tags = ?, note = ?, reviewer = ?,"
                       f" curated_at = ? WHERE {key} = ?"),
                 (after.quality, int(after.trainable), dumps(after.tags), after.note, c.reviewer, now, tid))
            tx.q(d.sql("INSERT INTO curation_history(target_kind, target_id, change, before, reviewer, at)"
                       " VALUES (?,?,?,?,?,?)"), (kind, tid, dumps(change), dumps(before.as_record()), c.reviewer, now))
        tx.event("curation", curation_event(c, traj_ids, len(targets), change), now)
        return len(targets)

    # -- batches, policy, keys ------------------------------------------------------------------------
    def _w_ack_batch(self, tx: WriteTx, batch_id: str) -> None:
        """The batch's leased groups become consumed (once: a second ack changes nothing)."""
        d = self.dialect
        row = tx.one(d.sql("SELECT acked_at FROM batches WHERE batch_id = ?") + d.for_update, (batch_id,))
        if row is None:
            raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
        if row[0] is not None:
            return
        now = time.time()
        tx.q(d.sql("UPDATE batches SET acked_at = ? WHERE batch_id = ?"), (now, batch_id))
        gids = [r[0] for r in tx.all(d.sql("UPDATE groups SET status = 'consumed', consumed_at = ?"
                                           " WHERE lease_batch_id = ? AND status = 'leased' RETURNING group_id"),
                                     (now, batch_id))]
        tx.event("batch", {"batch_id": batch_id, "status": "consumed", "group_ids": sorted(gids)}, now)

    def _w_publish_policy(self, tx: WriteTx, version: int, weights_path: str | None, note: str | None) -> Json:
        d = self.dialect
        self._lock_policy(tx)
        cur = tx.one("SELECT MAX(version) FROM policy")[0]
        if cur is not None and version <= cur:
            raise ConflictError(f"policy version must increase: current is {cur}, got {version}",
                                code="policy_version_not_increasing")
        now = time.time()
        tx.q(d.sql("INSERT INTO policy(version, weights_path, note, created_at) VALUES (?,?,?,?)"),
             (version, weights_path, note, now))
        out = {"version": version, "weights_path": weights_path, "note": note, "created_at": now}
        tx.event("policy", out, now)
        return out

    def _w_create_key(self, tx: WriteTx, scope: str, name: str | None,
                      binding: Json | None = None) -> tuple[str, str, float]:
        secret = f"sl-{scope}-{secrets.token_urlsafe(32)}"
        key_id = f"key_{secrets.token_hex(6)}"
        now = time.time()
        tx.q(self.dialect.sql("INSERT INTO keys(key_id, secret_hash, scope, name, created_at, binding)"
                              " VALUES (?,?,?,?,?,?)"),
             (key_id, hash_secret(secret), scope, name, now, dumps(binding) if binding is not None else None))
        return key_id, secret, now


__all__ = ["StoreWrites", "WriteTx", "TrajRef"]
