"""Pure ASGI middleware (cheap: no per-request task or body buffering).

- ``BodyLimitMiddleware``: refuses bodies over ``max_bytes`` with 413, on ``Content-Length`` before reading
  anything, and while streaming (chunked bodies) as soon as the running count passes the limit.
- ``RequestCounter``: counts answered requests by status code for ``/metrics``.
- ``BodyTimeoutMiddleware``: a request body idle for ``seconds`` (no byte while the app waits for one) gets 408
  and the connection is closed; a client that disconnects mid-body is logged in one line (the app's
  ``ClientDisconnect`` traceback is not).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError, SteplakeError
from .errors import error_response

log = logging.getLogger("steplake.api")


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


class _BodyIdle(Exception):
    pass


class BodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        more_body = True
        received = 0
        state = ""  # "" | "idle" (timed out) | "gone" (disconnected mid-body)
        started = False

        async def timed_receive() -> Message:
            nonlocal more_body, received, state
            if not more_body:  # the body is complete: the app waits for a disconnect, no deadline
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):  # no extra task (asyncio.wait_for makes one)
                    message = await receive()
            except TimeoutError:
                state = "idle"
                raise _BodyIdle() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = bool(message.get("more_body", False))
            elif message["type"] == "http.disconnect":
                state, more_body = "gone", False
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if state == "idle":  # swallow whatever the app answers to the exception; we answer 408 below
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state:
                raise
        where = f"{scope['method']} {scope['path']} from {_client(scope)} after {received} body bytes"
        if state == "gone":
            log.warning("client disconnected mid-body: %s", where)
        elif state == "idle":
            log.warning("slow client: request body idle for %g s: %s; answered 408", self.seconds, where)
            if not started:
                err = RequestTimeoutError(f"the request body was idle for more than {self.seconds:g} s")
                await error_response(scope["path"], err, headers={"connection": "close"})(scope, receive, send)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


__all__ = ["BodyLimitMiddleware", "BodyTimeoutMiddleware", "RequestCounter"]
