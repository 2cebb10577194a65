"""Background rewards: score trajectories of configured channels when they complete (or, for channels with
a group-relative function, when their group is ready), store each component with its function's name and
version, and re-run on demand with a new version (old values are kept; the scalar follows the latest).

Several servers on one pool score each trajectory once per function version: a server claims
``(trajectory, component, version)`` in the store first (store/claims.py) and skips what another holds.
The follower survives database outages: it retries with backoff from the last event it handled, and
catches up afterwards (and every ``catch_up_interval`` seconds) on complete trajectories left unscored.
Explicit runs (``POST /rewards/run``) score without claiming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..availability import Backoff, is_unavailable
from ..errors import NotFoundError
from ..records import RewardIn
from ..rewards import (
    ChannelRewards,
    RewardContext,
    RewardEnv,
    RewardSpec,
    Rollout,
    default_registry,
    load_reward_spec,
    needs_group,
)
from ..rewards import score_group as run_group
from ..rewards import score_trajectory as run_one
from ..store.base import ClaimKey
from ..types import Json

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("steplake.rewards")
KINDS = frozenset({"trajectory", "group"})
STALE_MARGIN_S = 60.0  # a claim older than its function's timeout plus this is taken over (its server died)


class Rewarder:
    def __init__(self, pool: Pool, raw_spec: dict[str, Any], env: RewardEnv | Callable[[], RewardEnv] | None = None,
                 *, owner: str | None = None, catch_up_interval: float = 60.0) -> None:
        self.pool = pool
        self.spec: RewardSpec = load_reward_spec(raw_spec)
        fixed = env if isinstance(env, RewardEnv) else RewardEnv()
        self._env: Callable[[], RewardEnv] = env if callable(env) else (lambda: fixed)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.catch_up_interval = catch_up_interval
        self.scored = 0
        self.failed = 0
        self.claimed_elsewhere = 0
        self.retries = 0
        self.cursor: int | None = None
        self._missed = False
        self._task: asyncio.Task[None] | None = None
        self._sem = asyncio.Semaphore(4)
        self._held: set[ClaimKey] = set()  # claims this process is working on now

    @property
    def env(self) -> RewardEnv:
        """What reward functions are lent, read each time one runs (the gateway's upstream may come later)."""
        return self._env()

    @property
    def channels(self) -> list[str]:
        return list(self.spec.channels)

    def configured(self, channel: str) -> bool:
        return bool(self.spec.for_channel(channel).functions)

    def start(self, after: int) -> None:
        self._task = asyncio.create_task(self._follow(after))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def stats(self) -> Json:
        return {"scored": self.scored, "failed": self.failed, "claimed_elsewhere": self.claimed_elsewhere,
                "retries": self.retries, "last_event_id": self.cursor, "channels": self.channels}

    # following the event feed ---------------------------------------------------------------------------
    async def _follow(self, after: int) -> None:
        """Handle events after ``after`` until shutdown; an outage or a bug never ends the task."""
        self.cursor = after
        self._missed = True  # catch up first (after a restart)
        backoff = Backoff(first=0.2, cap=2.0)
        while not self.pool.closing:
            try:
                await self._consume()
                return  # the pool is shutting down
            except Exception as e:
                self.retries += 1
                self.pool._background_failed("background rewards", e)
                self._missed = True
                await asyncio.sleep(backoff.next())

    async def _consume(self) -> None:
        next_catch_up = time.monotonic() + self.catch_up_interval
        async for ev in self.pool.subscribe(self.cursor, kinds=set(KINDS), heartbeat=5.0):
            if ev is not None and ev.get("id") is None:  # the store is unreachable; subscribe retries
                self._missed = True
                continue
            if self._missed or time.monotonic() >= next_catch_up:
                next_catch_up = time.monotonic() + self.catch_up_interval
                self._missed = not await self._catch_up_safely()
            if ev is None:
                continue
            try:
                await self._on_event(ev)
            except Exception as e:
                if is_unavailable(e):
                    raise  # retried from this event once the store answers
                log.exception("reward run failed for event %s", ev.get("id"))
            self.cursor = int(ev["id"])

    async def _catch_up_safely(self) -> bool:
        """False when the store could not be reached (try again soon); a bug waits for the next round."""
        try:
            await self.catch_up()
            return True
        except Exception as e:
            self.pool._background_failed("reward catch-up", e)
            return not is_unavailable(e)

    async def _on_event(self, ev: Json) -> None:
        d = ev["data"]
        if ev["kind"] == "trajectory" and d.get("status") == "complete":
            t = await self.pool.find_trajectory(d["trajectory_id"])
            if t and self.configured(t["channel"]) and not needs_group(self.spec.for_channel(t["channel"])):
                await self.score([d["trajectory_id"]], claim=True)
        elif ev["kind"] == "group" and d.get("status") == "ready":
            ch = d.get("channel") or "train"
            if self.configured(ch) and needs_group(self.spec.for_channel(ch)):
                g = await self.pool.get_group(d["group_id"])
                await self.score(g["trajectory_ids"], as_group=True, claim=True)

    async def catch_up(self) -> None:
        """Score complete trajectories of configured channels that have no reward yet (after a restart, an
        outage, and periodically: a claim whose server died becomes stale and is taken over here)."""
        for ch in self.channels:
            if ch == "*":
                continue
            page = await self.pool.list_trajectories({"channel": ch, "status": "complete", "has_reward": False},
                                                     None, 1000)
            if page.items:
                await self.score([t["trajectory_id"] for t in page.items], claim=True)

    # scoring -----------------------------------------------------------------------------------------------
    async def score(self, trajectory_ids: Sequence[str], *, as_group: bool = False,
                    version: str | None = None, claim: bool = False) -> list[Json]:
        """Score these trajectories now with the configured functions; returns the stored records. With
        ``claim`` (background runs) only the (trajectory, function version) pairs this server claims."""
        async with self._sem:
            rollouts = []
            for tid in trajectory_ids:
                try:
                    t = await self.pool.get_trajectory(tid)
                except NotFoundError:
                    if claim:  # deleted since its event: nothing to score
                        continue
                    raise
                if t["status"] == "complete":
                    rollouts.append(Rollout({k: v for k, v in t.items() if k != "steps"}, t["steps"]))
            groups: dict[str, list[Rollout]] = {}
            for r in rollouts:
                groups.setdefault(str(r.trajectory.get("group_id")), []).append(r)
            stored: list[Json] = []
            for members in groups.values():
                stored += await self._score_members(members, as_group, version, claim)
            return stored

    async def _score_members(self, members: list[Rollout], as_group: bool, version: str | None,
                             claim: bool) -> list[Json]:
        spec = self.spec.for_channel(str(members[0].trajectory.get("channel", "train")))
        held: set[ClaimKey] | None = None
        if claim:
            held = await self._claim([m.trajectory_id for m in members], spec)
            if not held:
                return []
        try:
            ctxs = [await self._context(r, members) for r in members]
            if as_group or needs_group(spec):
                mine = {k[1] for k in held} if held is not None else None
                results = await run_group(_only(spec, mine), ctxs)
            else:
                results = [await run_one(_only(spec, _components(held, c.trajectory_id)), c) for c in ctxs]
            stored: list[Json] = []
            for ctx, res in zip(ctxs, results, strict=True):
                stored += await self._store(ctx.trajectory_id, res, version, held)
            return stored
        finally:
            if held is not None:
                self._held -= held

    async def _claim(self, trajectory_ids: list[str], spec: ChannelRewards) -> set[ClaimKey]:
        keys = [(tid, f.key, _version(f)) for tid in trajectory_ids for f in spec.functions]
        keys = [k for k in keys if k not in self._held]
        if not keys:
            return set()
        stale = max(f.timeout_s for f in spec.functions) + STALE_MARGIN_S
        won = set(await self.pool._run(self.pool.store.claim_rewards, keys, self.owner, stale))
        won -= self._held  # claimed meanwhile by another task of this process
        self._held |= won
        self.claimed_elsewhere += len(set(keys) - won)
        return won

    async def _context(self, r: Rollout, members: list[Rollout]) -> RewardContext:
        fb = await self.pool._run(self.pool.store.list_feedback, {"trajectory_id": r.trajectory_id})
        return RewardContext(trajectory=r.trajectory, steps=r.steps, group=[m for m in members if m is not r],
                             feedback=fb, env=self.env)

    async def _store(self, tid: str, results: Sequence[Any], version: str | None,
                     held: set[ClaimKey] | None) -> list[Json]:
        out: list[Json] = []
        done: list[ClaimKey] = []
        released: list[ClaimKey] = []
        for res in results:
            key = (tid, res.component, res.version)
            if held is not None and key not in held:
                continue
            if res.value is None:  # failed or abstained (e.g. no feedback yet): a later catch-up asks again
                self.failed += res.error is not None
                released.append(key)
                if res.error:
                    log.warning("reward %s on %s failed: %s", res.component, tid, res.error)
                continue
            rec = res.to_record(tid)
            rec["version"] = version or rec["version"]
            out.append(await self.pool.add_reward(RewardIn(**rec)))
            done.append(key)
            self.scored += 1
        if held is not None:  # stored: never again; no value: released
            for keys, ok in ((done, True), (released, False)):
                if keys:
                    await self.pool._run(self.pool.store.settle_rewards, keys, self.owner, ok)
        return out


def _version(f: Any) -> str:
    return str(f.version or default_registry().resolve(f.name).version)


def _components(held: set[ClaimKey] | None, tid: str) -> set[str] | None:
    return None if held is None else {k[1] for k in held if k[0] == tid}


def _only(spec: ChannelRewards, components: set[str] | None) -> ChannelRewards:
    """The channel's functions restricted to ``components`` (None: all of them)."""
    if components is None:
        return spec
    return ChannelRewards.model_construct(functions=[f for f in spec.functions if f.key in components])


__all__ = ["Rewarder"]
