"""API keys, scopes and the dashboard session (CONTRACT §5).

While the store holds no key, everything is open (and ``steplake serve`` refuses non-loopback hosts).
Once a key exists, every request outside the open paths needs ``Authorization: Bearer <key>``,
``x-api-key: <key>`` or the dashboard's ``steplake_session`` cookie, and a scope allowed on the route:

========  ===============================================================================================
scope     may use
========  ===============================================================================================
agent     the gateway (``/v1/...``, ``/t/{id}/...``); ``POST /api/v1/trajectories``, ``/groups``, ``/steps``,
          ``/trajectories/{id}/complete``, ``/generate``, ``/feedback``
trainer   every ``GET`` under ``/api/v1`` (keys, audit excepted) and ``GET /metrics``; ``POST /api/v1/batches``,
          ``/batches/{id}/ack``, ``/policy``, ``/rewards``, ``/rewards/run``, ``/exports``
admin     everything (curation, deletes, keys, the dashboard)
========  ===============================================================================================

Open paths: ``/healthz``, ``/readyz``, ``/openapi.json``, ``/docs``, ``/redoc``, ``/api/v1/session`` and
the dashboard's static shell (``/``, ``/dashboard...``, ``/static/...``, ``/assets/...``, ``/favicon.ico``).
Missing, unknown or revoked key → 401; a scope that may not → 403. Key lookups are cached for
``CACHE_SECONDS``: a key revoked outside this process (``steplake keys revoke``) stops working within that
time; one revoked through the API stops at once.

Once this process has seen a key (configured in the store), it keeps requiring keys until it stops, even when
every key is revoked afterwards (through the API or ``steplake keys revoke``): revoking the last key locks the
server instead of opening it. A server bound beyond loopback also refuses (409 ``last_admin_key``) to revoke its
last admin key through the API (``Auth.revoke_key``).

Keys bound to a session (``steplake.store.keys``: scope ``agent``, a ``binding`` naming a trajectory) do
not count as configured keys: minting one keeps an open server open. Where keys are required they
authenticate like any agent key and the ``Principal`` carries the binding; on an open server the gateway
still recognises them for attribution through ``Auth.binding_of`` (the same cached lookup).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import AuthenticationError, ConflictError, PermissionDeniedError, SteplakeError, StoreError
from ..store.base import KeyRecord
from .errors import error_response

CACHE_SECONDS = 2.0
SESSION_COOKIE = "steplake_session"
SESSION_SECONDS = 12 * 3600.0

AGENT = frozenset({"agent", "admin"})
TRAINER = frozenset({"trainer", "admin"})
ADMIN = frozenset({"admin"})

OPEN_EXACT = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/favicon.ico", "/", "/api/v1/session"})
OPEN_PREFIXES = ("/dashboard", "/static/", "/assets/")
AGENT_POSTS = frozenset({"/api/v1/trajectories", "/api/v1/groups", "/api/v1/steps", "/api/v1/generate",
                         "/api/v1/feedback"})
TRAINER_POSTS = frozenset({"/api/v1/batches", "/api/v1/policy", "/api/v1/rewards", "/api/v1/rewards/run",
                           "/api/v1/exports"})


def required_scopes(method: str, path: str) -> frozenset[str] | None:
    """The scopes that may call ``method path``; None when the path is open to everyone."""
    if path in OPEN_EXACT or path.startswith(OPEN_PREFIXES):
        return None
    if path.startswith(("/v1/", "/t/")) or path == "/v1":
        return AGENT
    if path == "/metrics":
        return TRAINER
    if not path.startswith("/api/v1/"):
        return ADMIN
    if method in ("GET", "HEAD"):
        return ADMIN if path.startswith(("/api/v1/keys", "/api/v1/audit")) else TRAINER
    if method == "POST":
        if path in AGENT_POSTS or (path.startswith("/api/v1/trajectories/") and path.endswith("/complete")):
            return AGENT
        if path in TRAINER_POSTS or path.startswith("/api/v1/exports/") or (
                path.startswith("/api/v1/batches/") and path.endswith("/ack")):
            return TRAINER
    return ADMIN


@dataclass
class Principal:
    key_id: str
    scope: str
    name: str | None = None
    via: str = "key"  # key | session
    binding: dict[str, Any] | None = None  # the session this key is bound to (gateway attribution)


@dataclass
class _Session:
    key_id: str
    scope: str
    name: str | None
    expires_at: float


class KeyBook(Protocol):
    """The key calls ``Auth`` makes (the Pool answers them)."""

    async def has_keys(self) -> bool: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id: str) -> bool: ...
    async def lookup_key(self, secret: str) -> KeyRecord | None: ...


class Auth:
    """Key checks with a short cache, and the in-memory dashboard sessions (lost on restart)."""

    def __init__(self, keys: KeyBook, *, loopback: bool = True) -> None:
        self.keys = keys
        self.loopback = loopback  # bound to loopback only: revoking the last admin key is allowed
        self._keys_seen = False  # sticky: once keys were required, they stay required
        self._revoke_lock = asyncio.Lock()
        self._has_keys: tuple[bool, float] | None = None
        self._lookups: dict[str, tuple[KeyRecord | None, float]] = {}
        self._active_ids: tuple[set[str], float] | None = None
        self._sessions: dict[str, _Session] = {}

    def invalidate(self) -> None:
        """Forget cached answers (after a key was created or revoked through the API)."""
        self._has_keys = None
        self._lookups.clear()
        self._active_ids = None

    async def keys_required(self) -> bool:
        """True once the store holds a key (bound session keys aside); then True until this process stops."""
        if self._keys_seen:
            return True
        now = time.monotonic()
        if self._has_keys is None or self._has_keys[1] < now:
            has = await self.keys.has_keys()
            self._has_keys = (has, now + CACHE_SECONDS)
        self._keys_seen = self._has_keys[0]
        return self._has_keys[0]

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke ``key_id`` (False when unknown or revoked already). On a server bound beyond loopback the last
        active admin key may not be revoked (``ConflictError``): nobody could administer the server then."""
        async with self._revoke_lock:
            if not self.loopback:
                keys = await self.keys.list_keys()
                admins = {k.key_id for k in keys if k.scope == "admin" and k.revoked_at is None and k.binding is None}
                if admins == {key_id}:
                    raise ConflictError(
                        f"refusing to revoke {key_id!r}, the last admin key of a server that listens beyond "
                        "loopback; create another admin key first (POST /api/v1/keys, "
                        "'steplake keys create --scope admin')", code="last_admin_key")
            revoked = await self.keys.revoke_key(key_id)
        self.invalidate()
        return revoked

    async def lookup(self, secret: str) -> KeyRecord | None:
        now = time.monotonic()
        hit = self._lookups.get(secret)
        if hit is not None and hit[1] >= now:
            return hit[0]
        rec = await self.keys.lookup_key(secret)
        if rec is not None and rec.revoked_at is not None:
            rec = None
        if len(self._lookups) > 10_000:
            self._lookups.clear()
        self._lookups[secret] = (rec, now + CACHE_SECONDS)
        return rec

    async def binding_of(self, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
        """``(key_id, binding)`` of the session key sent in ``headers`` (``Authorization: Bearer`` or
        ``x-api-key``); None when no key, an unknown or revoked one, or one bound to nothing was sent. Cached
        like ``lookup``: after the first call for a key this is a dict lookup."""
        secret = bearer_secret(headers)
        if secret is None:
            return None
        rec = await self.lookup(secret)
        return (rec.key_id, rec.binding) if rec is not None and rec.binding is not None else None

    async def _key_active(self, key_id: str) -> bool:
        now = time.monotonic()
        if self._active_ids is None or self._active_ids[1] < now:
            keys = await self.keys.list_keys()
            self._active_ids = ({k.key_id for k in keys if k.revoked_at is None}, now + CACHE_SECONDS)
        return key_id in self._active_ids[0]

    # sessions ------------------------------------------------------------------------------------------
    def open_session(self, rec: KeyRecord) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now}
        self._sessions[token] = _Session(rec.key_id, rec.scope, rec.name, now + SESSION_SECONDS)
        return token

    def close_session(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    async def session_principal(self, token: str) -> Principal | None:
        s = self._sessions.get(token)
        if s is None or s.expires_at < time.time():
            return None
        if not await self._key_active(s.key_id):
            self._sessions.pop(token, None)
            return None
        return Principal(s.key_id, s.scope, s.name, via="session")

    async def identify(self, headers: dict[str, str]) -> Principal | None:
        """The caller's key or session; None when no credential was sent. Raises 401 for a bad one."""
        secret = bearer_secret(headers)
        if secret is not None:
            rec = await self.lookup(secret)
            if rec is None:
                raise AuthenticationError("invalid or revoked API key")
            return Principal(rec.key_id, rec.scope, rec.name, binding=rec.binding)
        token = cookie_value(headers.get("cookie", ""), SESSION_COOKIE)
        if token:
            p = await self.session_principal(token)
            if p is None:
                raise AuthenticationError("dashboard session expired; sign in again", code="session_expired")
            return p
        return None


def bearer_secret(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        kind, _, value = auth.strip().partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def cookie_value(cookie_header: str, name: str) -> str | None:
    for part in cookie_header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return v
    return None


class AuthMiddleware:
    """Pure ASGI: resolves the caller, enforces the scope table, stores the ``Principal`` in
    ``scope["state"]["principal"]`` (``request.state.principal``)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = required_scopes(scope["method"], scope["path"])
        if allowed is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._check(scope, allowed)
        except SteplakeError as err:
            extra = {"www-authenticate": "Bearer"} if err.status == 401 else None
            await error_response(scope["path"], err, headers=extra)(scope, receive, send)
            return
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope, allowed: frozenset[str]) -> Principal | None:
        try:
            if not await self.auth.keys_required():
                return None
        except Exception as e:
            raise StoreError(f"cannot check API keys: {type(e).__name__}: {e}") from e
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            principal = await self.auth.identify(headers)
        except SteplakeError:
            raise
        except Exception as e:
            raise StoreError(f"cannot check API keys: {type(e).__name__}: {e}") from e
        if principal is None:
            raise AuthenticationError(
                "this server requires an API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key")
        if principal.scope not in allowed:
            need = " or ".join(sorted(allowed))
            raise PermissionDeniedError(
                f"a key with scope {principal.scope!r} may not call {scope['method']} {scope['path']} "
                f"(needs {need})")
        return principal


__all__ = ["Auth", "AuthMiddleware", "Principal", "required_scopes", "SESSION_COOKIE", "bearer_secret",
           "cookie_value", "CACHE_SECONDS"]
