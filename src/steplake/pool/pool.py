"""The Data Pool: async facade over a Store, shared by the HTTP API, the gateway and the dashboard.

It adds what a store alone does not know: the event notifications of this process, gateway capture
accounting (pending / committed / failed), the idle sweeper, long-polling batches and recipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..availability import Backoff, StoreAvailability, is_unavailable
from ..errors import NotFoundError
from ..records import BatchIn, CurationIn, FeedbackIn, RewardIn, Step
from ..store.base import AppendResult, Json, Page, Store, audit_entry
from .access import StoreAccess

if TYPE_CHECKING:
    from ..rewards import RewardEnv

log = logging.getLogger("steplake.pool")
T = TypeVar("T")
P = ParamSpec("P")
POLICY_CHECK_S = 0.25  # the policy follower reads the published version at most this often


class CaptureStats:
    def __init__(self) -> None:
        self.pending = 0
        self.committed = 0
        self.failed = 0
        self.last_error: str | None = None

    def as_dict(self) -> Json:
        return {"pending": self.pending, "committed": self.committed, "failed": self.failed,
                "last_error": self.last_error}


class Pool(StoreAccess):
    """Async API of the pool. Create with a store, then ``await start()``; ``await stop()`` at the end."""

    def __init__(self, store: Store, *, idle_timeout: float = 300.0, sweep_interval: float | None = None,
                 event_poll_interval: float = 0.5, rewards: dict[str, Any] | None = None,
                 retention: dict[str, float] | None = None, prune_interval: float = 3600.0,
                 reward_env: Callable[[], RewardEnv] | None = None) -> None:
        self.store = store
        self.reward_env = reward_env  # what reward functions are lent (LLM judges: the gateway's upstream)
        self.retention = retention or {}
        self.prune_interval = prune_interval
        self.reward_config = rewards or {}
        self.rewarder: Any = None
        self.idle_timeout = idle_timeout
        self.sweep_interval = sweep_interval if sweep_interval is not None else max(0.2, min(10.0, idle_timeout / 5))
        self.event_poll_interval = event_poll_interval
        self.captures = CaptureStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        # readiness probes run on threads of their own: during an outage every store thread may be waiting on
        # the database, and /readyz must still answer at once that it is away
        self._probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="steplake-probe")
        self._policy: Json | None = None
        self.on_policy: list[Callable[[Json], Any]] = []  # gateway hooks (reload upstream weights)
        # outages of the database (PostgreSQL restarts): the store's own record when it keeps one
        self.availability: StoreAvailability = getattr(store, "availability", None) or StoreAvailability()

    # lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        await self._run(self.store.open)
        self.store.set_commit_hook(self.notify)  # long polls and event streams wake at each commit
        self.availability.watch(lambda _available: self.notify())  # waiters find out (SSE error events)
        self._policy = await self._run(self.store.get_policy)
        if self.reward_config:
            from .rewarder import Rewarder

            self.rewarder = Rewarder(self, self.reward_config, self.reward_env)
            self.rewarder.start(await self._run(self.store.last_event_id))
        self._tasks.append(asyncio.create_task(self._sweeper()))
        if self.retention:
            self._tasks.append(asyncio.create_task(self._pruner()))
        self._tasks.append(asyncio.create_task(self._event_ticker()))
        self._tasks.append(asyncio.create_task(self._follow_policy()))

    async def stop(self) -> None:
        if self.rewarder is not None:
            await self.rewarder.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        await self._drain()
        await asyncio.to_thread(self.store.close)
        self._probes.shutdown(wait=False, cancel_futures=True)

    async def probe(self, fn: Callable[[], T]) -> T:
        """A short health check (``store.ping``) on the probe threads, never queued behind store calls."""
        return await asyncio.get_running_loop().run_in_executor(self._probes, fn)

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call in a worker thread, counted until the thread is done (even if we are cancelled).
        A call cancelled while still queued never runs: it is uncounted here, or ``stop`` would wait for it."""
        state = {"started": False, "dropped": False}
        marker = self.availability.marker()
        with self._inflight_lock:
            self._inflight += 1

        def call() -> T:
            with self._inflight_lock:
                if state["dropped"]:
                    raise asyncio.CancelledError
                state["started"] = True
            try:
                return fn(*args, **kwargs)
            finally:
                with self._inflight_lock:
                    self._inflight -= 1
        try:
            result = await asyncio.to_thread(call)
        except BaseException as e:
            with self._inflight_lock:
                if not state["started"] and not state["dropped"]:
                    state["dropped"] = True
                    self._inflight -= 1
            if isinstance(e, Exception) and is_unavailable(e):
                self.availability.down(e)
            raise
        self.availability.up_after(marker)  # a call begun during an outage answered: it is over
        return result

    def _background_failed(self, what: str, e: Exception) -> None:
        """A background task's store call failed: an outage is logged once (the task retries), a bug always."""
        if not is_unavailable(e):
            log.exception("%s failed", what)
        elif self.availability.down(e):
            log.warning("%s: store unavailable (%s); retrying until it answers", what, str(e).strip())

    async def _drain(self, timeout: float = 30.0) -> None:
        """Wait for store calls still running in threads (their awaiting tasks may be cancelled)."""
        deadline = time.monotonic() + timeout
        while self._inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def notify(self) -> None:
        """Wake event subscribers and long-polling batch requests (thread-safe)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._bump)

    def _bump(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        if ev is not None:
            ev.set()

    @property
    def closing(self) -> bool:
        """True once the server began shutting down: event streams end and long polls answer now."""
        return self._closing

    def begin_shutdown(self) -> None:
        """Thread- and signal-safe: end open event streams and long polls so shutdown does not wait on them."""
        self._closing = True
        self.notify()

    def change_marker(self) -> asyncio.Event:
        """The event set by the next change; take it *before* reading state, then wait on it."""
        assert self._changed is not None, "pool not started"
        return self._changed

    @staticmethod
    async def wait_on(marker: asyncio.Event, timeout: float) -> None:
        """Wait until ``marker`` is set or ``timeout`` passes. Not ``asyncio.wait_for``: on Python 3.11 it
        swallows a cancellation that arrives as the marker is set, and the cancelled task then never ends
        (a hung ``Pool.stop`` waiting for the rewarder)."""
        if marker.is_set():
            return
        waiter = asyncio.ensure_future(marker.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                n = await self._run(self.store.sweep_idle, self.idle_timeout)
                if n:
                    self.notify()
            except Exception as e:  # keep sweeping (an outage: the next sweep catches up)
                self._background_failed("idle sweep", e)

    async def _pruner(self) -> None:
        from .lifecycle import prune

        backoff = Backoff(first=1.0, cap=60.0)
        while True:
            delay = self.prune_interval
            try:
                done = await self._run(prune, self.store, self.retention)
                if any(done.values()):
                    log.info("retention pruned %s", done)
                    self.notify()
                    entry = audit_entry("trajectories.prune", actor="server", via="server", summary={
                        "deleted": {ch: n for ch, n in done.items() if n}, "retention": self.retention})
                    await self._run(self.store.append_audit, entry)
                backoff.reset()
            except Exception as e:  # retried soon, not an interval later
                self._background_failed("retention prune", e)
                delay = min(self.prune_interval, backoff.next())
            await asyncio.sleep(delay)

    async def _event_ticker(self) -> None:
        """Other processes (several servers on one database) write events too: poll for them."""
        last, failed = None, False
        while True:
            try:
                cur = await self._run(self.store.last_event_id)
                if failed or (last is not None and cur != last):
                    self.notify()
                last, failed = cur, False
            except Exception as e:  # an outage: waiters retry on their own; wake them once it is over
                self._background_failed("event poll", e)
                failed = True
            await asyncio.sleep(self.event_poll_interval)

    # steps -------------------------------------------------------------------------------------------
    async def append_steps(self, steps: Sequence[Step]) -> AppendResult:
        res = await self._run(self.store.append_steps, steps)
        self.notify()
        return res

    def capture(self, step: Step) -> None:
        """Queue a gateway capture for the next group commit; never raises, never waits."""
        self.captures.pending += 1
        loop = self._loop

        def done(err: BaseException | None) -> None:
            def account() -> None:
                self.captures.pending -= 1
                if err is None:
                    self.captures.committed += 1
                else:
                    self.capture_failed(step.step_id, err)
                self._bump()
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(account)
        try:
            self.store.submit_steps([step], done)
        except Exception as e:  # the store refused at once (closed, ...)
            done(e)

    async def capture_sync(self, step: Step) -> None:
        """Capture and wait for the commit (``--capture-sync``); a failure is counted, then raised."""
        self.captures.pending += 1
        try:
            await self._run(self.store.append_steps, [step])
            self.captures.committed += 1
        except Exception as e:
            self.capture_failed(step.step_id, e)
            raise
        finally:
            self.captures.pending -= 1
            self.notify()

    def capture_failed(self, step_id: str | None, err: BaseException) -> None:
        """Count one gateway capture that will not be stored (the store refused it, or it could not be
        built): the one failure count that ``stats()["captures"]`` and the gateway's stats both show."""
        self.captures.failed += 1
        self.captures.last_error = f"{type(err).__name__}: {err}"
        log.warning("capture of step %s failed: %s", step_id or "(not built)", err)

    async def get_step(self, step_id: str) -> Json:
        s = await self._run(self.store.get_step, step_id)
        if s is None:
            raise NotFoundError(f"step {step_id!r} not found", code="step_not_found")
        return s

    async def list_steps(self, filters: Json, cursor: str | None, limit: int, with_ids: bool = True) -> Page:
        return await self._run(self.store.list_steps, filters, cursor, limit, with_ids)

    # trajectories and groups ------------------------------------------------------------------------
    async def create_trajectory(self, trajectory_id: str, group_id: str | None = None,
                                group_size: int | None = None, channel: str | None = None,
                                metadata: Json | None = None) -> Json:
        t = await self._run(self.store.create_trajectory, trajectory_id, group_id, group_size, channel,
                            metadata or {})
        self.notify()
        return t

    async def create_group(self, group_id: str, n: int, channel: str | None, metadata: Json,
                           trajectory_ids: Sequence[str]) -> Json:
        g = await self._run(self.store.create_group, group_id, n, channel, metadata, trajectory_ids)
        self.notify()
        return g

    async def complete_trajectory(self, trajectory_id: str, reward: float | None = None,
                                  metadata: Json | None = None) -> Json:
        t = await self._run(self.store.complete_trajectory, trajectory_id, reward, metadata)
        self.notify()
        return t

    async def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json:
        t = await self._run(self.store.get_trajectory, trajectory_id, with_steps)
        if t is None:
            raise NotFoundError(f"trajectory {trajectory_id!r} not found", code="trajectory_not_found")
        return t

    async def find_trajectory(self, trajectory_id: str) -> Json | None:
        return await self._run(self.store.get_trajectory, trajectory_id, False)

    async def list_trajectories(self, filters: Json, cursor: str | None, limit: int) -> Page:
        return await self._run(self.store.list_trajectories, filters, cursor, limit)

    async def delete_trajectory(self, trajectory_id: str) -> None:
        if not await self._run(self.store.delete_trajectory, trajectory_id):
            raise NotFoundError(f"trajectory {trajectory_id!r} not found", code="trajectory_not_found")
        self.notify()

    async def get_group(self, group_id: str) -> Json:
        g = await self._run(self.store.get_group, group_id)
        if g is None:
            raise NotFoundError(f"group {group_id!r} not found", code="group_not_found")
        return g

    async def list_groups(self, filters: Json, cursor: str | None, limit: int) -> Page:
        return await self._run(self.store.list_groups, filters, cursor, limit)

    async def find_open_trajectory(self, exchange_hash: str) -> str | None:
        return await self._run(self.store.find_open_trajectory, exchange_hash)

    async def sweep_idle(self) -> int:
        n = await self._run(self.store.sweep_idle, self.idle_timeout)
        self.notify()
        return n

    # rewards, curation, feedback ----------------------------------------------------------------------
    async def add_reward(self, reward: RewardIn) -> Json:
        r = await self._run(self.store.add_reward, reward)
        self.notify()
        return r

    async def run_rewards(self, trajectory_ids: Sequence[str], version: str | None = None) -> list[Json]:
        """Score these trajectories now with the configured reward functions (a re-run keeps old values)."""
        if self.rewarder is None:
            from ..errors import BadRequestError

            raise BadRequestError("no reward functions are configured (settings 'rewards')", code="no_rewards")
        out: list[Json] = await self.rewarder.score(trajectory_ids, version=version)
        return out

    async def curate(self, change: CurationIn) -> int:
        n = await self._run(self.store.curate, change)
        self.notify()
        return n

    async def curation_history(self, target_id: str) -> list[Json]:
        return await self._run(self.store.curation_history, target_id)

    async def add_feedback(self, feedback: FeedbackIn) -> Json:
        f = await self._run(self.store.add_feedback, feedback)
        self.notify()
        return f

    # policy ------------------------------------------------------------------------------------------
    @property
    def policy_version(self) -> int:
        return int((self._policy or {}).get("version", 0))

    def adopt_policy(self, policy: Json | None) -> None:
        """Take ``policy`` as the current one unless a newer version is already known (versions increase)."""
        if policy is not None and int(policy.get("version", 0)) >= self.policy_version:
            self._policy = policy

    async def publish_policy(self, version: int, weights_path: str | None, note: str | None) -> Json:
        """Record a version (409 unless above the current one). Reloading upstreams first is the gateway's
        part (``Gateway.publish_policy``); this only records."""
        p = await self._run(self.store.publish_policy, version, weights_path, note)
        self.adopt_policy(p)
        self.notify()
        return p

    async def get_policy(self) -> Json:
        p = await self._run(self.store.get_policy)
        self.adopt_policy(p)
        return p

    async def _follow_policy(self) -> None:
        """Adopt versions published through other servers on the same database within a second (CONTRACT
        §2). Woken by every commit any server makes (LISTEN/NOTIFY on PostgreSQL; the event ticker's poll
        otherwise), it reads the published version at most every ``POLICY_CHECK_S``; errors (a database
        restart) are retried on the next wake."""
        failures = 0
        while not self._closing:
            marker = self.change_marker()
            try:
                self.adopt_policy(await self._run(self.store.get_policy))
                failures = 0
            except Exception as e:
                failures += 1
                if failures == 1:
                    log.warning("cannot read the published policy: %s: %s", type(e).__name__, e)
            await asyncio.sleep(POLICY_CHECK_S * min(2 ** failures, 16))
            await self.wait_on(marker, 5.0)

    # batches -----------------------------------------------------------------------------------------
    async def fetch_batch(self, request: BatchIn) -> Json:
        """Select (and unless ``dry_run`` lease) ready groups, long-polling up to ``wait_seconds``."""
        from .batching import build_batch_answer

        deadline = time.monotonic() + request.wait_seconds
        while True:
            marker = self.change_marker()
            sel = await self._run(self.store.select_batch, request)
            left = deadline - time.monotonic()
            if sel.groups or left <= 0 or self._closing:
                break
            await self.wait_on(marker, min(left, 1.0))
        if sel.batch_id:
            self.notify()
        return await self._run(build_batch_answer, self.store, request, sel)

    async def ack_batch(self, batch_id: str) -> Json:
        b = await self._run(self.store.ack_batch, batch_id)
        self.notify()
        return b

    # events and stats ----------------------------------------------------------------------------------
    async def read_events(self, after: int, limit: int = 1000) -> list[Json]:
        return await self._run(self.store.read_events, after, limit)

    async def subscribe(self, after: int | None = None, kinds: set[str] | None = None,
                        heartbeat: float = 15.0) -> AsyncIterator[Json | None]:
        """Yield events after ``after`` (None: from now) until shutdown; yields None as a heartbeat.

        While the store cannot be reached it yields one ``outage_event`` (``id`` None, kind ``error``) per
        outage and retries with backoff from the last event read, so nothing is skipped or repeated."""
        cursor, backoff, failing = after, Backoff(), False
        while not self._closing:
            marker = self.change_marker()
            try:
                if cursor is None:
                    cursor = await self._run(self.store.last_event_id)
                events = await self.read_events(cursor, 500)
            except Exception as err:
                if not is_unavailable(err):
                    raise
                if not failing:
                    failing = True
                    yield outage_event()
                await asyncio.sleep(backoff.next())
                continue
            failing = False
            backoff.reset()
            for e in events:
                cursor = e["id"]
                if kinds is None or e["kind"] in kinds:
                    yield e
            if len(events) < 500 and not self._closing:
                await self.wait_on(marker, heartbeat)
                if not marker.is_set():
                    yield None

    async def overview(self, window: float, bucket: float) -> Json:
        """The dashboard overview's aggregates (``Store.read_overview``) at the current policy version."""
        return await self._run(self.store.read_overview, self.policy_version, window, bucket, time.time())

    async def stats(self) -> Json:
        """Counters of the store and this process; during a known outage only this process's own (the
        store's counters come back with it), ``store.available`` false."""
        if self.availability.available:
            s = await self._run(self.store.stats)
        else:
            s = {"store": {}}
        s["store"] = {**s.get("store", {}), **self.availability.as_dict()}
        s["captures"] = self.captures.as_dict()
        if self.rewarder is not None:
            s["rewards"] = self.rewarder.stats()
        s["policy_version"] = self.policy_version
        return s


def outage_event() -> Json:
    """What ``subscribe`` yields when the store stops answering (SSE: an ``error`` event without an id)."""
    return {"id": None, "kind": "error", "data": {"error": {
        "message": "the store is unavailable; events resume from the last one sent once it answers",
        "type": "store_error", "code": "store_unavailable"}}}


__all__ = ["Pool", "CaptureStats", "outage_event"]
