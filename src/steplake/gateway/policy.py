"""Publishing a policy version through the gateway (CONTRACT §2), and the gate upstream calls pass.

With ``weights_path``: close the gate (new upstream calls wait), wait for the calls in flight, reload every
reloadable upstream (the embedded model and SGLang: ``POST /update_weights_from_disk``; vLLM: its developer
routes, see gateway/reload.py), and record the version only if every reload succeeded. Otherwise the upstreams that did load the new weights are reloaded with the previous ones (the
last recorded ``weights_path``, else what their model card reported), nothing is recorded, and the answer is
a 502 ``policy_reload_failed`` whose ``details.upstreams`` lists each upstream's result. An upstream that
cannot go back is left out of routing (``stale_weights``) until a later publish reloads it. Without
``weights_path`` the version is only recorded (the trainer reloaded its engine itself). Either way a call
carries the version that was current when it passed the gate, i.e. when its upstream call started.

``weights_path`` must lie under ``--weights-root`` (resolved: symlinks followed, no ``..`` escape); with
no root configured every ``weights_path`` is refused (422). With a vLLM upstream the folder is checked before
any upstream is called (a checkpoint vLLM cannot read kills it): 422 ``weights_path_invalid`` naming the
upstream and the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..config import Settings
from ..errors import ConflictError, PolicyReloadError, ServiceUnavailableError, ValidationError
from ..pool.pool import Pool
from ..types import Json
from ..upstreams.base import RELOADABLE, Upstream
from ..upstreams.openai_compat import UpstreamClient
from ..upstreams.routing import UpstreamPool
from .reload import check_checkpoint, reload_upstream

STALE = "stale_weights"  # Upstream.extra key: serves weights of a publish that was not recorded


class Ticket:
    """One upstream call that passed the gate; ``version`` is the policy current when it did."""

    def __init__(self, gate: CallGate, version: int) -> None:
        self.version = version
        self._gate: CallGate | None = gate

    def done(self) -> None:
        """The upstream call is over (idempotent)."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._leave()


class CallGate:
    """Upstream calls enter (waiting while a publish reloads weights) and leave when their answer is in."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.in_flight = 0
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def enter(self) -> Ticket:
        await self._open.wait()
        self.in_flight += 1
        self._idle.clear()
        return Ticket(self, self.pool.policy_version)

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    @contextlib.asynccontextmanager
    async def closed(self, timeout: float) -> AsyncIterator[None]:
        """New calls wait; wait (up to ``timeout``) for the calls in flight; reopen on exit."""
        self._open.clear()
        try:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                raise ServiceUnavailableError(
                    f"{self.in_flight} upstream call(s) were still in flight after {timeout:.0f} s; nothing was "
                    "reloaded or recorded, retry the publish", code="policy_drain_timeout") from None
            yield
        finally:
            self._open.set()


class GatedStreamingResponse(StreamingResponse):
    """A streamed answer whose upstream call stays in flight (for the policy gate) until it is sent or the
    client is gone."""

    def __init__(self, content: Any, ticket: Ticket, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.done()


def check_weights_path(path: str, root: str | None) -> str:
    """The resolved ``path`` when it lies under ``root`` (a relative path is taken from ``root``); 422 else."""
    if root is None:
        raise ValidationError("weights_path is refused: this server has no weights root; start it with "
                              "--weights-root DIR to reload checkpoints stored under DIR",
                              code="weights_path_refused")
    if "\x00" in path or not path.strip():
        raise ValidationError("weights_path must be a non-empty path without NUL", code="weights_path_refused")
    base = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / path))  # an absolute path replaces root
    if real != base and base not in real.parents:
        raise ValidationError(f"weights_path {path!r} is outside the weights root {str(base)!r}",
                              code="weights_path_refused")
    return str(real)


class PolicyPublisher:
    def __init__(self, settings: Settings, pool: Pool, upstreams: UpstreamPool, client: UpstreamClient,
                 gate: CallGate) -> None:
        self.settings = settings
        self.pool = pool
        self.upstreams = upstreams
        self.client = client
        self.gate = gate
        self._lock = asyncio.Lock()

    @property
    def reload_timeout(self) -> float:
        return max(60.0, self.settings.upstream_timeout)

    async def publish(self, version: int, weights_path: str | None, note: str | None) -> Json:
        """Reload (when ``weights_path``) and record; see the module docstring. Answers the recorded policy
        plus ``gateway: {version, upstreams: [...]}``."""
        path = check_weights_path(weights_path, self.settings.weights_root) if weights_path is not None else None
        async with self._lock:
            current = await self.pool.get_policy()
            if version <= int(current.get("version") or 0):
                raise ConflictError(f"policy version must increase: current is {current.get('version')}, got "
                                    f"{version}", code="policy_version_not_increasing")
            if path is None:
                policy = await self.pool.publish_policy(version, None, note)
                return self._answer(policy, [self._skipped(u, "no weights_path: nothing to reload")
                                             for u in self.upstreams.upstreams])
            await check_checkpoint(self.upstreams.upstreams, path)
            async with self.gate.closed(min(self.settings.upstream_timeout, 300.0)):
                results = await self._reload_all(path, version)
                if all(r["reloaded"] or not r["reloadable"] for r in results):
                    try:
                        policy = await self.pool.publish_policy(version, path, note)
                    except BaseException:
                        await self._roll_back(results, current)
                        raise
                    return self._answer(policy, results)
                await self._roll_back(results, current)
        failed = ", ".join(f"{r['url']}: {r['detail']}" for r in results if r["reloadable"] and not r["reloaded"])
        raise PolicyReloadError(f"policy version {version} was not recorded: reloading {path} failed ({failed}); "
                                "the upstreams serve the previous weights", details={"upstreams": results})

    def _answer(self, policy: Json, results: list[Json]) -> Json:
        return {**policy, "gateway": {"version": policy.get("version"), "upstreams": results}}

    @staticmethod
    def _skipped(up: Upstream, detail: str) -> Json:
        return {"url": up.root, "kind": up.effective_kind, "reloadable": up.effective_kind in RELOADABLE,
                "reloaded": False, "detail": detail}

    async def _reload_all(self, path: str, version: int) -> list[Json]:
        ups = self.upstreams.upstreams
        return list(await asyncio.gather(*(self._reload(u, path, version) for u in ups)))

    async def _reload(self, up: Upstream, path: str, version: int) -> Json:
        if up.effective_kind not in RELOADABLE:
            return self._skipped(up, f"{up.effective_kind} upstreams cannot be reloaded by the gateway; reload "
                                     "the server yourself, then publish without weights_path")
        res: Json = {"url": up.root, "kind": up.effective_kind, "reloadable": True}
        ok, detail = await self._load(up, path, version)
        if ok:
            up.extra.pop(STALE, None)
        return {**res, "reloaded": ok, "detail": detail}

    async def _load(self, up: Upstream, path: str, version: int | None) -> tuple[bool, Any]:
        return await reload_upstream(self.client, up, path, version, self.reload_timeout)

    async def _roll_back(self, results: list[Json], current: Json) -> None:
        """Reload the previous weights where the new ones were loaded; mark the upstreams that cannot."""
        by_root = {u.root: u for u in self.upstreams.upstreams}
        for r in results:
            up = by_root.get(r["url"])
            if up is None or not r.get("reloaded"):
                continue
            previous = current.get("weights_path") or (up.extra.get("model_card") or {}).get("root")
            ok, detail = ((await self._load(up, str(previous), current.get("version"))) if previous
                          else (False, "no previous weights path"))
            r["rolled_back"] = ok
            if not ok:
                up.extra[STALE] = f"serves weights of a publish that was not recorded; rollback failed: {detail}"
                r["detail"] = f"{r['detail']}; {up.extra[STALE]}"


__all__ = ["CallGate", "Ticket", "GatedStreamingResponse", "PolicyPublisher", "check_weights_path", "STALE"]
