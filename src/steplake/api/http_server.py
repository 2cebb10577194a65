"""What ``steplake serve`` adds around the app at the HTTP layer (uvicorn).

- ``http_protocol(settings)``: uvicorn's HTTP protocol (httptools, h11 when httptools is missing) with a
  header deadline: a connection whose request line and headers are not complete ``header_timeout`` seconds
  after it opened (or after the first byte of a later request on a kept-alive connection) is closed. uvicorn
  alone waits forever, so idle or trickling connections pile up (slowloris).
- ``guarded_app(app, settings)``: the app behind ``guard.HostGuard`` (421 for a ``Host`` this server does not
  answer for: DNS rebinding).

The request body deadline (408 after ``body_timeout`` idle seconds) and the one-line log of a client that
disconnects mid-body live in the app (``middleware.BodyTimeoutMiddleware``), so every server gets them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp

from ..config import Settings
from .guard import HostGuard
from .hosts import host_policy

log = logging.getLogger("steplake.server")


class HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: ``arm`` when a request may start, ``disarm`` when its headers are in."""

    header_timeout: float = 10.0
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    _header_timer: asyncio.TimerHandle | None = None

    def arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            who = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info("closing connection from %s: request headers incomplete after %g s", who, self.header_timeout)
            self.transport.close()


def _httptools_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsDeadlineProtocol(HeaderDeadline, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_header_deadline()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self.arm_header_deadline()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self.disarm_header_deadline()
            super().on_headers_complete()

    return HttpToolsDeadlineProtocol


def _h11_protocol() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11DeadlineProtocol(HeaderDeadline, H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_header_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self.arm_header_deadline()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self.disarm_header_deadline()

    return H11DeadlineProtocol


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The HTTP protocol class for ``uvicorn.Config(http=...)`` with ``settings.header_timeout``."""
    try:
        import httptools  # noqa: F401

        base = _httptools_protocol()
    except ImportError:
        base = _h11_protocol()
    attrs: dict[str, Any] = {"header_timeout": settings.header_timeout}
    return type(base.__name__, (base,), attrs)


def guarded_app(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` answering only for the hosts ``settings`` bind, announce and allow (``hosts.host_policy``)."""
    return HostGuard(app, host_policy(settings))


__all__ = ["http_protocol", "guarded_app", "HeaderDeadline"]
