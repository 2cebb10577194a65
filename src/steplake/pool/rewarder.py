"""Background rewards: score trajectories of configured channels when they complete (or, for channels with
a group-relative function, when their group is ready), store each component with its function's name and
version, and re-run on demand with a new version (old values are kept; the scalar follows the latest)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..records import RewardIn
from ..rewards import RewardContext, RewardEnv, RewardSpec, Rollout, load_reward_spec, needs_group
from ..rewards import score_group as run_group
from ..rewards import score_trajectory as run_one

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("steplake.rewards")
Json = dict[str, Any]


class Rewarder:
    def __init__(self, pool: Pool, raw_spec: dict[str, Any], env: RewardEnv | None = None) -> None:
        self.pool = pool
        self.spec: RewardSpec = load_reward_spec(raw_spec)
        self.env = env or RewardEnv()
        self.scored = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._sem = asyncio.Semaphore(4)

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
        return {"scored": self.scored, "failed": self.failed, "channels": self.channels}

    async def _follow(self, after: int) -> None:
        await self.catch_up()
        async for ev in self.pool.subscribe(after, kinds={"trajectory", "group"}):
            if ev is None:
                continue
            try:
                await self._on_event(ev)
            except Exception:
                log.exception("reward run failed for event %s", ev.get("id"))

    async def _on_event(self, ev: Json) -> None:
        d = ev["data"]
        if ev["kind"] == "trajectory" and d.get("status") == "complete":
            t = await self.pool.find_trajectory(d["trajectory_id"])
            if t and self.configured(t["channel"]) and not needs_group(self.spec.for_channel(t["channel"])):
                await self.score([d["trajectory_id"]])
        elif ev["kind"] == "group" and d.get("status") == "ready":
            ch = d.get("channel") or "train"
            if self.configured(ch) and needs_group(self.spec.for_channel(ch)):
                g = await self.pool.get_group(d["group_id"])
                await self.score(g["trajectory_ids"], as_group=True)

    async def catch_up(self) -> None:
        """Score complete trajectories of configured channels that have no reward yet (after a restart)."""
        for ch in self.channels:
            if ch == "*":
                continue
            page = await self.pool.list_trajectories({"channel": ch, "status": "complete", "has_reward": False},
                                                     None, 1000)
            if page.items:
                await self.score([t["trajectory_id"] for t in page.items])

    async def score(self, trajectory_ids: Sequence[str], *, as_group: bool = False,
                    version: str | None = None) -> list[Json]:
        """Score these trajectories now with the configured functions; returns the stored records."""
        async with self._sem:
            rollouts = []
            for tid in trajectory_ids:
                t = await self.pool.get_trajectory(tid)
                if t["status"] == "complete":
                    rollouts.append(Rollout({k: v for k, v in t.items() if k != "steps"}, t["steps"]))
            if not rollouts:
                return []
            stored: list[Json] = []
            groups: dict[str, list[Rollout]] = {}
            for r in rollouts:
                groups.setdefault(str(r.trajectory.get("group_id")), []).append(r)
            for members in groups.values():
                ctxs = [await self._context(r, members) for r in members]
                channel = str(members[0].trajectory.get("channel", "train"))
                spec = self.spec.for_channel(channel)
                if as_group or needs_group(spec):
                    results = await run_group(spec, ctxs)
                else:
                    results = [await run_one(spec, c) for c in ctxs]
                for ctx, res in zip(ctxs, results, strict=True):
                    stored += await self._store(ctx.trajectory_id, res, version)
            return stored

    async def _context(self, r: Rollout, members: list[Rollout]) -> RewardContext:
        fb = await self.pool._run(self.pool.store.list_feedback, {"trajectory_id": r.trajectory_id})
        return RewardContext(trajectory=r.trajectory, steps=r.steps, group=[m for m in members if m is not r],
                             feedback=fb, env=self.env)

    async def _store(self, tid: str, results: Sequence[Any], version: str | None) -> list[Json]:
        out = []
        for res in results:
            if res.value is None:
                self.failed += res.error is not None
                if res.error:
                    log.warning("reward %s on %s failed: %s", res.component, tid, res.error)
                continue
            rec = res.to_record(tid)
            rec["version"] = version or rec["version"]
            out.append(await self.pool.add_reward(RewardIn(**rec)))
            self.scored += 1
        return out


__all__ = ["Rewarder"]
