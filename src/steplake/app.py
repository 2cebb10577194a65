"""The application factory: ``create_app(settings, store=None, *, gateway=True) -> FastAPI``.

Nothing happens at import. ``create_app`` builds the store object (``open_store(settings.db, settings)``
unless one is given), the Pool, the gateway (when importable and enabled) and the routes; the lifespan
starts the pool (which opens the store) and the gateway, and stops them in reverse order. ``app.state``
holds ``settings``, ``store``, ``pool``, ``gateway`` (or None), ``auth`` and ``request_counts``.

Middleware, outermost first: request counter (``/metrics``), cross-site request guard (``api.guard``), body
idle timeout, keys and scopes, body limit, audit log (``api.audit``). ``steplake serve`` also checks the
Host header (``api.http_server``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from . import __version__
from .api import api_routers
from .api.audit import AuditMiddleware
from .api.auth import Auth, AuthMiddleware
from .api.common import install_openapi
from .api.errors import install_error_handlers
from .api.guard import RequestGuard
from .api.hosts import is_loopback
from .api.middleware import BodyLimitMiddleware, BodyTimeoutMiddleware, RequestCounter
from .api.responses import JSONResponse
from .config import Settings
from .pool.pool import Pool
from .store.base import Store

if TYPE_CHECKING:
    from .rewards import RewardEnv

log = logging.getLogger("steplake.app")


def _gateway_class() -> Any:
    try:
        from .gateway import Gateway
    except ImportError as e:
        log.warning("gateway not available (%s); serving the API only", e)
        return None
    return Gateway


def _mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Hook for the dashboard package: ``steplake.dashboard.mount_dashboard(app, settings)``."""
    try:
        from .dashboard import mount_dashboard
    except ImportError:
        return
    mount_dashboard(app, settings)


def create_app(settings: Settings, store: Store | None = None, *, gateway: bool = True) -> FastAPI:
    """Build the steplake ASGI app (API, gateway, dashboard) around ``store``."""
    if store is None:
        from .store import open_store

        store = open_store(settings.db, settings)
    if settings.rewards:  # a bad reward configuration fails here, before anything is served
        from .rewards import load_reward_spec

        load_reward_spec(settings.rewards)

    def reward_env() -> RewardEnv:  # read when a reward function runs: LLM judges use the gateway's upstream
        from .rewards import RewardEnv

        ups = gw.upstreams.upstreams if gw is not None else []
        return RewardEnv(llm_base_url=ups[0].v1) if ups else RewardEnv()

    pool = Pool(store, idle_timeout=settings.idle_timeout, rewards=settings.rewards or None,
                retention=settings.retention or None, reward_env=reward_env)
    auth = Auth(pool, loopback=is_loopback(settings.host))
    gateway_cls = _gateway_class() if gateway else None
    gw = gateway_cls(settings, pool, auth=auth) if gateway_cls is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.start()
        try:
            if gw is not None:
                await gw.start()
            try:
                yield
            finally:
                if gw is not None:
                    await gw.stop()
        finally:
            await pool.stop()

    app = FastAPI(title="steplake", version=__version__, lifespan=lifespan, redoc_url=None,
                  default_response_class=JSONResponse,
                  description="Step-level data layer for agentic RL: gateway, data pool, batches.")
    counts: Counter[int] = Counter()
    app.state.settings, app.state.store, app.state.pool = settings, store, pool
    app.state.gateway, app.state.auth, app.state.request_counts = gw, auth, counts
    install_error_handlers(app)
    for router in api_routers():
        app.include_router(router)
    if gw is not None:
        app.include_router(gw.router)
    _mount_dashboard(app, settings)
    install_openapi(app)
    if gw is not None:  # innermost: proxied calls skip the router, after auth and the body limit ran
        from .gateway import GatewayFastPath

        app.add_middleware(GatewayFastPath, gateway=gw)
    app.add_middleware(AuditMiddleware, audit=pool)  # inside auth: it reads the caller's Principal
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, auth=auth)
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.body_timeout)
    app.add_middleware(RequestGuard, public_url=settings.public_url)
    app.add_middleware(RequestCounter, counts=counts)
    return app


__all__ = ["create_app"]
