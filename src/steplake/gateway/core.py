"""The Gateway object: upstreams, attribution index, capture, routes and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from ..errors import CaptureFailedError, SteplakeError
from ..pool.pool import Pool
from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure, parse_upstream
from ..upstreams.local import LocalModelProcess
from ..upstreams.openai_compat import UpstreamClient
from ..upstreams.routing import UpstreamPool
from ..upstreams.tokenizer import FallbackTokenizer
from .attribution import Attribution, ExchangeIndex, KeyBindings, history_hashes, new_trajectory_id
from .capture import CallContext, Capturer
from .http import Protocol, steplake_error_response, upstream_error_response
from .policy import STALE, CallGate, PolicyPublisher, Ticket
from .prompts import PromptModes
from .token_chat import TokenChat
from .token_wire import Wire

log = logging.getLogger("steplake.gateway")
Handler = Callable[[Request], Awaitable[Response]]
SWITCH_INTERVAL = 0.0005
T = TypeVar("T")


class Gateway:
    """OpenAI/Anthropic-compatible proxy that records every call as a Step. See the package docstring."""

    def __init__(self, settings: Settings, pool: Pool, *, auth: KeyBindings | None = None,
                 health_interval: float = 5.0, ready_wait: float = 180.0) -> None:
        self.settings = settings
        self.pool = pool
        self.local: LocalModelProcess | None = None
        ups = [parse_upstream(u) for u in settings.upstream]
        if not ups:
            self.local = LocalModelProcess(gguf=settings.model_gguf)
            ups = [self.local.upstream()]
        self.client = UpstreamClient(read_timeout=settings.upstream_timeout)
        self.upstreams = UpstreamPool(ups, self.client, interval=health_interval,
                                      retries=settings.upstream_retries, ready_wait=ready_wait)
        self.tokenizer = FallbackTokenizer(settings.tokenizer) if settings.tokenizer else None
        self.index = ExchangeIndex()
        self.capturer = Capturer(pool, self.index, self.tokenizer, settings.capture_sync)
        self.gate = CallGate(pool)  # upstream calls pass it; a policy publish closes it while reloading
        self.publisher = PolicyPublisher(settings, pool, self.upstreams, self.client, self.gate)
        self.scoring_calls = 0  # prompt_logprobs requests: forwarded, never captured
        self.prompts = PromptModes(self)  # --prompt-mode: chat or the token path (gateway/prompts.py)
        self.token_chat = TokenChat(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.auth = auth  # the app's key checks (steplake.api.auth.Auth): caches to drop when a key moves
        self._session_locks: dict[str, asyncio.Lock] = {}
        self._moved: dict[str, Json] = {}  # key id → the binding a session key was last moved to
        self._switch: float | None = None
        self._routes = self.routes()
        self.router = APIRouter()
        self.router.routes.extend(self._routes)

    # lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        # The store's writer thread holds the GIL in bursts; with CPython's default 5 ms switch interval the
        # event loop can wait that long for it between two requests. 0.5 ms bounds the wait (restored at stop).
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL))
        await self.client.start()
        if self.tokenizer is not None:  # ~15 s for a GGUF: now, not in the first capture (see readiness)
            self.tokenizer.start_loading()
        if self.local is not None:
            up = self.upstreams.upstreams[0]
            try:
                await self.local.start()
            except OSError as e:
                log.error("cannot start the embedded model: %s", e)
                up.extra["exited"] = str(e)
                up.loading = False
            else:
                self.spawn(self._watch_local(up))
        await self.upstreams.start()
        if self.prompts.mode != "chat":
            self.spawn(self.prompts.warm())

    async def stop(self) -> None:
        if self.local is not None:
            await self.local.stop()
        for t in list(self._tasks):  # captures in flight, the local model's watcher
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 5.0)
        await self.upstreams.stop()
        await self.client.stop()
        if self._switch is not None:
            sys.setswitchinterval(self._switch)

    async def _watch_local(self, up: Upstream) -> None:
        assert self.local is not None and self.local.proc is not None
        rc = await self.local.proc.wait()
        up.extra["exited"] = rc
        up.loading = False
        up.mark(False, f"the embedded model server exited with status {rc}")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a capture in the background, keeping a reference until it finishes."""
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def ready(self) -> bool:
        return any(u.healthy and STALE not in u.extra for u in self.upstreams.upstreams)

    def readiness(self) -> dict[str, str | None]:
        """The gateway's own readiness checks for /readyz, besides its upstreams: name → None when ready, else
        why not (``--tokenizer`` still loading, or its load failed)."""
        return {"tokenizer": self.tokenizer.problem()} if self.tokenizer is not None else {}

    def end_stream(self, ctx: CallContext, resp: Any, done: bool) -> None:
        """A relayed upstream stream is over: its connection goes back to the pool when the answer was whole;
        otherwise it is closed and the call's exchange claim released (the agent's retry continues its
        trajectory)."""
        if done:
            resp.release()
            return
        resp.close()
        self.index.release(ctx.att.claimed_hash)

    async def stream_tail(self, ctx: CallContext, up: Upstream, ans: Any, hashes: list[str | None],
                          wire: Wire) -> AsyncIterator[bytes]:
        """The end of a whole relayed stream: captured (before the final events with ``--capture-sync``, whose
        failure sends the wire's error event instead of them; else in the background), then the wire's end."""
        if self.settings.capture_sync:
            try:
                await self.capturer.capture(ctx, up, ans, hashes)
            except CaptureFailedError as e:
                yield wire.capture_error(e)
                return
        else:
            self.spawn(self.capturer.capture(ctx, up, ans, hashes))
        for ev in wire.end():
            yield ev

    def stats(self) -> Json:
        return {"upstreams": [u.as_dict() for u in self.upstreams.upstreams],
                "capture": self.capturer.stats(), "exchange_index": len(self.index),
                "policy_gate": {"paused": self.gate.paused, "in_flight": self.gate.in_flight},
                "captures_in_flight": len(self._tasks), "scoring_calls": self.scoring_calls,
                "prompt_modes": self.prompts.stats(),
                "ids_missing": sum(u.ids_missing for u in self.upstreams.upstreams),
                "ids_inconsistent": sum(u.ids_inconsistent for u in self.upstreams.upstreams)}

    # attribution ---------------------------------------------------------------------------------------
    async def resolve(self, att: Attribution, messages: list[Json] | None) -> Attribution:
        """Fill ``att.trajectory_id`` for a call that named none: the session its key is bound to (see
        ``_follow_session``), else automatic attribution."""
        if att.trajectory_id:
            return att
        if att.binding is None and att.key_lookup is not None:
            auth, headers = att.key_lookup
            try:
                found = await auth.binding_of(headers)
            except Exception as e:  # the store is unreachable: attribute automatically, never break the call
                log.warning("cannot look up the call's API key: %s: %s", type(e).__name__, e)
                found = None
            if found is not None:
                att.key_id, att.binding = found
        if att.binding is not None:
            att.bind(att.binding)
            await self._follow_session(att)
            return att
        for h in history_hashes(messages or []):
            if self.index.is_claimed(h):
                continue
            tid = self.index.lookup(h)
            if tid is not None:
                self.index.claim(h, tid)  # before awaiting: a concurrent call must not join too
                t = await self.pool.find_trajectory(tid)
                if t is not None and t.get("status") != "open":
                    self.index.release(h)
                    tid = None
            else:
                tid = await self.pool.find_open_trajectory(h)
                if tid is not None and (self.index.is_claimed(h) or self.index.is_stale(h, tid)):
                    tid = None
                if tid is not None:
                    self.index.claim(h, tid)
            if tid is not None:
                att.trajectory_id, att.source, att.claimed_hash = tid, "auto-join", h
                return att
        att.trajectory_id, att.source = new_trajectory_id(), "auto-new"
        return att

    # policy ----------------------------------------------------------------------------------------------
    async def publish_policy(self, version: int, weights_path: str | None, note: str | None) -> Json:
        """``POST /api/v1/policy``: reload the upstreams (with ``weights_path``) and record the version only
        when every reload succeeded (gateway/policy.py)."""
        return await self.publisher.publish(version, weights_path, note)

    async def call_upstream(self, ctx: CallContext | None, key: str | None,
                            fn: Callable[[Upstream], Awaitable[T]]) -> tuple[Upstream, T]:
        """One complete upstream call through the policy gate; ``ctx`` gets the version current at its start."""
        ticket = await self.gate.enter()
        if ctx is not None:
            ctx.policy_version = ticket.version
        try:
            return await self.upstreams.call(key, fn)
        finally:
            ticket.done()

    async def open_upstream(self, ctx: CallContext, key: str | None,
                            fn: Callable[[Upstream], Awaitable[T]]) -> tuple[Upstream, T, Ticket]:
        """Open a streamed upstream call through the policy gate; the ticket is done when the stream is
        (``policy.GatedStreamingResponse``)."""
        ticket = await self.gate.enter()
        ctx.policy_version = ticket.version
        try:
            up, resp = await self.upstreams.call(key, fn)
        except BaseException:
            ticket.done()
            raise
        return up, resp, ticket

    async def _follow_session(self, att: Attribution) -> None:
        """A session whose trajectory was completed (the idle rule, an explicit complete) goes on in a new
        trajectory: same group, channel and metadata plus ``continues``, and the key moves to it, so an
        agent that resumes after a pause is still captured. One move per key at a time."""
        if att.key_id is None:
            return
        t = await self.pool.find_trajectory(att.trajectory_id)
        if t is None or t.get("status") != "complete":
            return
        lock = self._session_locks.setdefault(att.key_id, asyncio.Lock())
        async with lock:
            moved = self._moved.get(att.key_id)
            if moved is None or moved["trajectory_id"] == att.trajectory_id:
                old = att.trajectory_id
                meta = {**((att.binding or {}).get("metadata") or {}), "continues": old}
                moved = {**(att.binding or {}), "trajectory_id": new_trajectory_id(), "metadata": meta}
                await self.pool.rebind_key(att.key_id, moved)
                if self.auth is not None:
                    self.auth.invalidate()
                self._moved[att.key_id] = moved
                if len(self._moved) > 10_000:
                    self._moved.clear()
                log.info("session key %s: trajectory %s is complete; the session goes on in %s",
                         att.key_id, old, moved["trajectory_id"])
        att.binding = moved
        att.trajectory_id = moved["trajectory_id"]
        att.metadata = {**att.metadata, "continues": moved["metadata"]["continues"]}

    # routes ------------------------------------------------------------------------------------------------
    def wrap(self, protocol: Protocol, fn: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except UpstreamFailure as e:  # a SteplakeError too: first, so the upstream's own body passes on
                return upstream_error_response(protocol, e)
            except SteplakeError as e:
                return steplake_error_response(protocol, e)
        endpoint.__name__ = fn.__name__
        return endpoint

    def routes(self) -> list[Route]:
        from .anthropic import AnthropicHandlers
        from .openai import OpenAIHandlers
        from .responses import ResponsesHandlers, responses_endpoint
        from .whitebox import WhiteboxHandlers

        oa, an, wb = OpenAIHandlers(self), AnthropicHandlers(self), WhiteboxHandlers(self)
        rs = ResponsesHandlers(self)
        out: list[Route] = []
        for prefix in ("", "/t/{trajectory_id}", "/t/{trajectory_id}/g/{group_id}"):
            out += [
                Route(prefix + "/v1/chat/completions", self.wrap("openai", oa.chat), methods=["POST"]),
                Route(prefix + "/v1/completions", self.wrap("openai", oa.completions), methods=["POST"]),
                Route(prefix + "/v1/models", self.wrap("openai", oa.models), methods=["GET"]),
                Route(prefix + "/v1/messages", self.wrap("anthropic", an.messages), methods=["POST"]),
                Route(prefix + "/v1/responses", responses_endpoint(rs.create), methods=["POST"]),
                Route(prefix + "/v1/responses/{response_id}", responses_endpoint(rs.retrieve), methods=["GET"]),
            ]
        out.append(Route("/api/v1/generate", self.wrap("openai", wb.generate), methods=["POST"]))
        return out


class GatewayFastPath:
    """Optional ASGI middleware: serve gateway paths straight from the gateway's routes, skipping the
    app's router and inner middlewares (≈ 30 % less CPU per proxied call). Add it innermost, after auth:
    ``app.add_middleware(GatewayFastPath, gateway=gw)`` before the auth middleware is added. Other paths
    (and gateway paths with a wrong method) go on to the app unchanged."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.routes = gateway._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(("/v1/", "/t/")) or path == "/api/v1/generate":
                for route in self.routes:
                    match, child = route.matches(scope)
                    if match is Match.FULL:
                        scope.update(child)
                        await route.handle(scope, receive, send)
                        return
        await self.app(scope, receive, send)


__all__ = ["Gateway", "GatewayFastPath"]
