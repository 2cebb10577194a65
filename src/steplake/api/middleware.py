"""Pure ASGI middleware (cheap: no per-request task or body buffering).

- ``BodyLimitMiddleware``: refuses bodies over ``max_bytes`` with 413, on ``Content-Length`` before reading
  anything, and while streaming (chunked bodies) as soon as the running count passes the limit.
- ``RequestCounter``: counts answered requests by status code for ``/metrics``.
"""

from __future__ import annotations

from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BadRequestError, PayloadTooLargeError, SteplakeError
from .errors import error_response


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> PayloadTooLargeError:
        mib = self.max_bytes / (1024 * 1024)
        return PayloadTooLargeError(
            f"request body is larger than the limit of {self.max_bytes} bytes ({mib:g} MiB); "
            "send smaller batches or raise --max-body-mb"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: SteplakeError) -> None:
        await error_response(scope.get("path", ""), err, headers={"connection": "close"})(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, receive, send, BadRequestError("invalid Content-Length header"))
                    return
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send, self._too_large())
                    return
                break
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # swallow whatever the app answers to the exception; we answer 413 below
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send, self._too_large())


class RequestCounter:
    """Counts responses by status code; ``counts`` is read by ``/metrics``."""

    def __init__(self, app: ASGIApp, counts: Counter[int]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counts = self.counts

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts[int(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


__all__ = ["BodyLimitMiddleware", "RequestCounter"]
