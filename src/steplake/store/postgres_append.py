"""Step appends of PostgresStore, set-based: one statement locks every trajectory of the call, one opens the
new ones (and their groups), one COPY stores the steps, one UPDATE moves every trajectory's append state.
Continuity is computed in Python under the row locks, from the trajectory row's last full sequence."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConflictError
from ..records import DEFAULT_CHANNEL, Step
from ..rules.continuity import classify
from .accounting import account_step
from .base import AppendResult, Json
from .codec import dumps
from .encode import encode_step, indexed_text
from .postgres_tx import Tx
from .postgres_writes import PgTraj, PgWrites

STEP_INSERT_COLS = ("step_id, trajectory_id, group_id, step_index, channel, policy_version, continuity, parent_step_id,"
                    " shared_prefix_len, prompt_len, response_len, prompt_tail, response_ids, response_logprobs,"
                    " token_source, finish_reason, model, reward, latency_ms, created_at, content_hash, doc")
TRAJ_STATE = "trajectory_id, group_id, channel, status, next_index, last_step_id, last_seq"
UPDATE_TRAJ = (
    "UPDATE trajectories t SET n_steps = t.n_steps + d.n, next_index = GREATEST(t.next_index, d.nxt),"
    " n_tokens = t.n_tokens + d.tokens, n_realigned = t.n_realigned + d.realigned, n_fork = t.n_fork + d.fork,"
    " updated_at = %s, last_finish_reason = COALESCE(d.finish, t.last_finish_reason),"
    " last_tool_calls = COALESCE(d.tools, t.last_tool_calls), exchange_hash = COALESCE(d.xhash, t.exchange_hash),"
    " min_policy = LEAST(t.min_policy, d.pmin), max_policy = GREATEST(t.max_policy, d.pmax),"
    " last_step_id = d.lsid, last_seq = d.lseq"
    " FROM unnest(%s::text[], %s::int[], %s::int[], %s::bigint[], %s::int[], %s::int[], %s::text[], %s::int[],"
    " %s::text[], %s::int[], %s::int[], %s::text[], %s::bytea[])"
    " AS d(tid, n, nxt, tokens, realigned, fork, finish, tools, xhash, pmin, pmax, lsid, lseq)"
    " WHERE t.trajectory_id = d.tid")


class PgAppend(PgWrites):
    def _lock_trajs(self, tx: Tx, tids: list[str]) -> dict[str, PgTraj]:
        out: dict[str, PgTraj] = {}
        for r in tx.all(f"SELECT {TRAJ_STATE} FROM trajectories WHERE trajectory_id = ANY(%s)"
                        " ORDER BY trajectory_id FOR UPDATE", (tids,)):
            st = out[r[0]] = PgTraj(r[1], r[2], r[3], r[4], r[5], r[6])
            if st.next_index > 0 and st.last_step_id is None:  # copied by ``steplake migrate``: rebuild
                _, st.last_step_id, st.last_seq = self._full_seq_for(tx.conn, r[0], None)
        return out

    def _open_many(self, tx: Tx, firsts: list[Step], now: float) -> dict[str, PgTraj]:
        """Open the trajectories these first steps name (their groups too), in one statement each."""
        rows = [(s.trajectory_id, s.group_id or s.trajectory_id, s.channel or DEFAULT_CHANNEL, s) for s in firsts]
        groups = list(dict.fromkeys((gid, ch) for _, gid, ch, _ in rows))
        made = {r[0] for r in tx.all(
            "INSERT INTO groups(group_id, channel, size, metadata, created_at, updated_at)"
            " SELECT g, c, 1, %s, %s, %s FROM unnest(%s::text[], %s::text[]) AS u(g, c)"
            " ON CONFLICT (group_id) DO NOTHING RETURNING group_id",
            (dumps({}), now, now, [g for g, _ in groups], [c for _, c in groups]))}
        for gid, _ in groups:
            if gid in made:
                tx.event("group", {"group_id": gid, "status": "collecting", "size": 1}, now)
        agents = [s.metadata.get("agent") if isinstance(s.metadata.get("agent"), str) else None for *_, s in rows]
        opened = {r[0] for r in tx.all(
            "INSERT INTO trajectories(trajectory_id, group_id, channel, metadata, agent, created_at, updated_at)"
            " SELECT t, g, c, m, a, %s, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
            " AS u(t, g, c, m, a) ON CONFLICT (trajectory_id) DO NOTHING RETURNING trajectory_id",
            (now, now, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
             [dumps(dict(r[3].metadata)) for r in rows], agents))}
        per_group: dict[str, int] = {}
        out: dict[str, PgTraj] = {}
        for tid, gid, ch, _ in rows:
            if tid in opened:
                per_group[gid] = per_group.get(gid, 0) + 1
                tx.event("trajectory", {"trajectory_id": tid, "group_id": gid, "channel": ch, "status": "open"}, now)
                out[tid] = PgTraj(gid, ch, "open", 0, None, None)
        if per_group:
            tx.q("UPDATE groups g SET n_trajectories = g.n_trajectories + d.n FROM unnest(%s::text[], %s::int[])"
                 " AS d(gid, n) WHERE g.group_id = d.gid", (list(per_group), list(per_group.values())))
        raced = [r[0] for r in rows if r[0] not in opened]  # another server opened them a moment ago
        out.update(self._lock_trajs(tx, raced) if raced else {})
        return out

    def _w_append(self, tx: Tx, steps: Sequence[Step]) -> AppendResult:
        ctx = _AppendCtx(time.time(), tx.one("SELECT COALESCE(MAX(version), 0) FROM policy")[0])
        states = self._lock_trajs(tx, sorted({s.trajectory_id for s in steps}))
        known: dict[str, bytes] = {r[0]: bytes(r[1]) for r in tx.all(
            "SELECT step_id, content_hash FROM steps WHERE step_id = ANY(%s)", ([s.step_id for s in steps],))}
        firsts = {s.trajectory_id: s for s in reversed(steps) if s.trajectory_id not in states}
        if firsts:
            states.update(self._open_many(tx, [firsts[t] for t in dict.fromkeys(
                s.trajectory_id for s in steps if s.trajectory_id in firsts)], ctx.now))
        for s in steps:
            self._append_one(tx, s, states, known, ctx)
        self._flush_steps(tx, ctx)
        if ctx.tdelta:
            tids = list(ctx.tdelta)
            d = [ctx.tdelta[t] for t in tids]
            cols = ("n", "next", "tokens", "realigned", "fork", "finish", "tools", "xhash", "pmin", "pmax")
            tx.q(UPDATE_TRAJ, (ctx.now, tids, *([x[c] for x in d] for c in cols),
                               [states[t].last_step_id for t in tids], [states[t].last_seq for t in tids]))
        tx.count(ctx.counts)
        return ctx.res

    def _parent(self, tx: Tx, tid: str, st: PgTraj, index: int, ctx: _AppendCtx) -> tuple[str | None, bytes | None]:
        if index > st.last_index:
            return st.last_step_id, st.last_seq
        self._flush_steps(tx, ctx)
        dup = tx.one("SELECT step_id FROM steps WHERE trajectory_id = %s AND step_index = %s", (tid, index))
        if dup is not None:
            raise ConflictError(f"trajectory {tid!r} already has a step {dup[0]!r} at step_index {index}",
                                code="step_index_conflict")
        _, parent_id, parent_seq = self._full_seq_for(tx.conn, tid, index)
        return parent_id, parent_seq

    def _append_one(self, tx: Tx, s: Step, states: dict[str, PgTraj], known: dict[str, bytes],
                    ctx: _AppendCtx) -> None:
        e = encode_step(s)
        prompt, response, logprobs, chash = e.prompt, e.response, e.logprobs, e.content_hash
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
        self._admit_step(tx, s, st, ctx.now)
        index = st.next_index if s.step_index is None else s.step_index
        parent_id, parent_seq = self._parent(tx, tid, st, index, ctx)
        continuity, shared = classify(parent_seq, prompt)
        policy = ctx.policy if s.policy_version is None else s.policy_version
        ctx.pending.append((step_id, tid, st.group_id, index, st.channel, policy, continuity, parent_id, shared,
                            len(prompt) // 4, len(response) // 4, prompt[shared * 4:], response, logprobs,
                            s.token_source, s.finish_reason, s.model, s.reward, s.latency_ms, ctx.now, chash,
                            e.doc))
        if text := indexed_text(e.text, s.messages, continuity):
            ctx.texts.append((step_id, text))
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
        if ctx.texts:
            tx.q("INSERT INTO step_text(seq, trajectory_id, text) SELECT s.seq, s.trajectory_id, t.text"
                 " FROM unnest(%s::text[], %s::text[]) AS t(step_id, text) JOIN steps s ON s.step_id = t.step_id",
                 ([i for i, _ in ctx.texts], [x for _, x in ctx.texts]))
            ctx.texts.clear()


class _AppendCtx:
    """Per-call accumulators of ``_w_append``."""

    def __init__(self, now: float, policy: int) -> None:
        self.now, self.policy = now, policy
        self.pending: list[tuple[Any, ...]] = []
        self.texts: list[tuple[str, str]] = []  # (step_id, search text)
        self.tdelta: dict[str, Json] = {}
        self.counts: dict[str, int] = {"steps": 0, "prompt_tokens": 0, "response_tokens": 0}
        self.res = AppendResult(accepted=0)

    def account(self, s: Step, tid: str, st: PgTraj, index: int, continuity: str, shared: int, policy: int,
                step_id: str, tx: Tx) -> None:
        account_step(self.tdelta, self.counts, s, tid, index, st.next_index, continuity, shared, policy)
        tx.event("step", {"step_id": step_id, "trajectory_id": tid, "group_id": st.group_id, "step_index": index,
                          "continuity": continuity, "channel": st.channel}, self.now)
        self.res.accepted += 1
        self.res.step_ids.append(step_id)


__all__ = ["PgAppend"]
