"""Browser attacks refused before any route runs (pure ASGI middleware).

- ``RequestGuard`` (cross-site request forgery): a state-changing request (``POST``, ``PUT``, ``PATCH``,
  ``DELETE``) is refused with 403 when its ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site`` or its
  ``Origin`` is not the server's own (``hosts.is_own_origin``), whatever credential it carries (key, dashboard
  cookie, none on an open server). JSON routes (``/api/v1/...``, the gateway's ``/v1/...`` and ``/t/...``)
  answer 415 to ``text/plain``, form and multipart bodies: those are the bodies a page on another origin may
  send without a CORS preflight. Agents and SDKs send no ``Origin`` and JSON bodies: they are not affected.
- ``HostGuard`` (DNS rebinding): a ``Host`` header naming a host this server does not answer for
  (``hosts.HostPolicy``) gets 421. ``steplake serve`` wraps the app in it (``http_server.server_config``); the
  app built by ``create_app`` alone answers any Host (in-process clients).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import MisdirectedRequestError, PermissionDeniedError, SteplakeError, UnsupportedMediaTypeError
from .errors import error_response
from .hosts import HostPolicy, is_own_origin

log = logging.getLogger("steplake.api")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_MEDIA_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
JSON_PREFIXES = ("/api/v1/", "/v1/", "/t/")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def is_json_route(path: str) -> bool:
    return path.startswith(JSON_PREFIXES) or path == "/v1"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_request(scope: Scope, public_url: str | None) -> SteplakeError | None:
    """Why this state-changing request is refused, or None."""
    site = (header(scope, b"sec-fetch-site") or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return PermissionDeniedError(
            f"refused a {site} browser request ({scope['method']} {scope['path']}): state-changing calls are "
            "accepted from this server's own pages and from clients that are not browsers",
            code="cross_site_request")
    origin = header(scope, b"origin")
    if origin is not None and not is_own_origin(origin, header(scope, b"host") or "", public_url):
        return PermissionDeniedError(
            f"refused a request from origin {origin[:200]!r} ({scope['method']} {scope['path']}): only this "
            "server's own origin may change state (set --public-url when it is served under another name)",
            code="foreign_origin")
    kind = media_type(header(scope, b"content-type") or "")
    if kind in FORM_MEDIA_TYPES and is_json_route(scope["path"]):
        return UnsupportedMediaTypeError(
            f"{scope['path']} takes a JSON body; send 'Content-Type: application/json' (got {kind!r})")
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, public_url: str | None = None) -> None:
        self.app = app
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            err = check_request(scope, self.public_url)
            if err is not None:
                log.info("%s %s -> %s: %s", scope["method"], scope["path"], err.status, err.code)
                await error_response(scope["path"], err, headers={"vary": "Origin"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HostGuard:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = header(scope, b"host")
            if host is not None and not self.policy.allows(host):
                err = MisdirectedRequestError(
                    f"this server does not answer for host {host[:200]!r} (it answers for "
                    f"{self.policy.describe()}); add it with --allowed-hosts", code="unknown_host")
                if scope["type"] == "http":
                    await error_response(scope["path"], err, headers={"connection": "close"})(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


__all__ = ["RequestGuard", "HostGuard", "check_request", "is_json_route", "FORM_MEDIA_TYPES"]
