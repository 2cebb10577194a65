"""Upstream pool: health checks, kind detection, sticky routing by trajectory, safe retries.

- Health: ``GET {root}/health`` every ``interval`` seconds (200 healthy, 503 loading, anything else or no
  answer unhealthy); a server without ``/health`` is checked with ``GET /v1/models``. A connection error
  during a call marks the upstream unhealthy at once; the next check revives it.
- Routing: among healthy upstreams, rendezvous hashing on the trajectory id, so one trajectory keeps
  hitting the same server (its prefix cache); calls without a trajectory go round-robin. An upstream left on
  the weights of a failed policy publish (``extra["stale_weights"]``) gets no calls.
- Retries: only failures that happened before any byte reached the agent (connection refused, 5xx) are
  retried, on *another* upstream, at most ``retries`` times. Timeouts and 4xx/429 are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

from .base import Upstream, UpstreamFailure
from .openai_compat import UpstreamClient

log = logging.getLogger("steplake.upstreams")
T = TypeVar("T")


class UpstreamPool:
    def __init__(self, upstreams: list[Upstream], client: UpstreamClient, *, interval: float = 5.0,
                 retries: int = 2, ready_wait: float = 180.0) -> None:
        self.upstreams = upstreams
        self.client = client
        self.interval = interval
        self.retries = max(0, retries)
        self.ready_wait = ready_wait
        self._rr = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def healthy(self) -> list[Upstream]:
        return [u for u in self.upstreams if u.healthy]

    async def _loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(u) for u in self.upstreams), return_exceptions=True)
            fast = any(u.loading or u.healthy is None for u in self.upstreams)
            await asyncio.sleep(0.25 if fast else self.interval)

    async def check(self, up: Upstream) -> bool:
        """One health check (and kind detection once healthy)."""
        was = up.healthy
        try:
            status, _ = await self.client.get(up.root + "/health", timeout=3.0, up=up)
            if status == 404:
                status, _ = await self.client.get(up.v1 + "/models", timeout=3.0, up=up)
        except Exception as e:  # unreachable, timeout, bad answer
            # the embedded model's process may still be starting (not listening yet)
            up.loading = up.local and "exited" not in up.extra
            up.mark(False, f"{type(e).__name__}: {e}")
            self._notify(was, up)
            return False
        up.loading = status == 503
        up.mark(status == 200, None if status == 200 else f"/health answered {status}")
        if up.healthy and (up.kind is None or up.model_id is None or "server" not in up.extra):
            await self._detect(up)
        self._notify(was, up)
        return bool(up.healthy)

    def _notify(self, was: bool | None, up: Upstream) -> None:
        if was != up.healthy:
            log.info("upstream %s is now %s", up.root, "healthy" if up.healthy else "unhealthy")
            self._changed.set()
            self._changed = asyncio.Event()

    async def _detect(self, up: Upstream) -> None:
        with contextlib.suppress(Exception):
            status, raw = await self.client.get(up.v1 + "/models", timeout=3.0, up=up)
            if status == 200:
                data = orjson.loads(raw).get("data") or []
                if data and isinstance(data[0], dict):
                    up.model_id = str(data[0].get("id"))
                    up.extra["model_card"] = data[0]
        if "server" not in up.extra and "model_card" in up.extra:
            await self._identify(up)
        if up.kind is not None:
            return
        if up.extra.get("server"):
            up.kind = "vllm"
            return
        for path, kind in (("/props", "llamacpp"), ("/get_model_info", "sglang")):
            with contextlib.suppress(Exception):
                status, _ = await self.client.get(up.root + path, timeout=3.0, up=up)
                if status == 200:
                    up.kind = kind
                    return
        up.kind = "vllm"

    async def _identify(self, up: Upstream) -> None:
        """vLLM, positively: ``GET /version`` answers ``{"version": "<x>"}`` and the model card says
        ``owned_by: "vllm"`` → ``extra["server"] = {"name": "vllm", "version": x}``; any other answer →
        ``None`` (not identified). A failed request leaves it unset (asked again at the next check)."""
        try:
            status, raw = await self.client.get(up.root + "/version", timeout=3.0, up=up)
        except Exception:
            return
        server: dict[str, str] | None = None
        card = up.extra.get("model_card") or {}
        with contextlib.suppress(ValueError):
            body = orjson.loads(raw) if status == 200 else None
            version = body.get("version") if isinstance(body, dict) else None
            if isinstance(version, str) and version and card.get("owned_by") == "vllm":
                server = {"name": "vllm", "version": version}
        up.extra["server"] = server

    def candidates(self, key: str | None) -> list[Upstream]:
        """Upstreams in the order to try: healthy ones (sticky for ``key``), then the rest."""
        usable = [u for u in self.upstreams if "stale_weights" not in u.extra]  # see gateway/policy.py
        good = [u for u in usable if u.healthy]
        rest = [u for u in usable if not u.healthy and not u.loading]
        if key is not None and len(good) > 1:
            # Rendezvous hashing with a real hash: CRC32 is affine, so for roots of equal length the
            # order barely depended on the key and most trajectories landed on the same upstream.
            kb = key.encode()
            good.sort(key=lambda u: hashlib.blake2b(kb + b"\0" + u.root.encode(), digest_size=8).digest(),
                      reverse=True)
        elif len(good) > 1:
            i = next(self._rr) % len(good)
            good = good[i:] + good[:i]
        return good + rest

    async def wait_ready(self) -> None:
        """While no upstream is healthy but one is loading or not checked yet, wait (up to ready_wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait
        while not any(u.healthy for u in self.upstreams):
            if not any(u.loading or u.healthy is None for u in self.upstreams):
                return
            left = deadline - loop.time()
            if left <= 0:
                raise UpstreamFailure(503, "the model is still loading; retry shortly")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def call(self, key: str | None, fn: Callable[[Upstream], Awaitable[T]]) -> tuple[Upstream, T]:
        """Run ``fn`` on the best upstream, retrying retryable failures on other upstreams."""
        if not any(u.healthy for u in self.upstreams):
            await self.wait_ready()
        last: UpstreamFailure | None = None
        for tried, up in enumerate(self.candidates(key)):
            if tried > self.retries:
                break
            up.requests += 1
            try:
                return up, await fn(up)
            except UpstreamFailure as e:
                up.errors += 1
                last = e
                if e.status == 502 and e.retryable:
                    up.mark(False, e.message)
                if not e.retryable:
                    raise
                up.retries += 1
        if last is None:
            raise UpstreamFailure(503, "no upstream is configured or ready")
        raise last


__all__ = ["UpstreamPool"]
