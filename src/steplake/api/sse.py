"""``GET /api/v1/events``: Server-Sent Events from the pool's event log.

Each event is ``id: <event id>``, ``event: <kind>``, ``data: <json>``; heartbeats are SSE comments. Resume with
the ``Last-Event-ID`` header (browsers send it on reconnect) or ``?last_event_id=``; without either the stream
starts at the current end. ``?kinds=step,trajectory`` keeps only those kinds.

``error`` events carry no id (``data: {"error": {message, type, code}}``):
- ``store_unavailable``: the database stopped answering (a PostgreSQL restart); the stream stays open and
  resumes by itself after the last event sent once the database answers, skipping nothing.
- ``key_revoked``: the key (or dashboard session) that opened the stream was revoked, or the server now
  requires keys; the credentials are checked again every ``RECHECK_SECONDS``. The stream then ends.
- ``stream_failed``: anything else; the stream ends. Reconnect with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import AuthenticationError, ValidationError
from ..rewards.secrets import redact_reward
from .common import pool_of
from .params import event_id
from .responses import dumps

router = APIRouter(prefix="/api/v1", tags=["events"])
log = logging.getLogger("steplake.api")

EVENT_KINDS = ("step", "trajectory", "group", "curation", "reward", "batch", "policy", "feedback")
RECHECK_SECONDS = 1.0  # how often an open stream checks that its key is still valid (lookups cached 2 s)
TICK_SECONDS = 0.5  # the stream wakes at least this often (credential checks, heartbeats)
QUEUE_SIZE = 256  # events read ahead of a slow client
_END = object()


def format_event(event: dict[str, Any]) -> bytes:
    data = event.get("data")
    if data is None:
        data = {k: v for k, v in event.items() if k not in ("id", "kind")}
    if event.get("kind") == "reward" and isinstance(data, dict):  # records stored before secrets were kept out
        data = redact_reward(data)
    head = b"" if event.get("id") is None else b"id: %d\n" % int(event["id"])
    return head + b"event: %s\ndata: %s\n\n" % (str(event["kind"]).encode(), dumps(data))


def error_event(message: str, code: str, type_: str) -> bytes:
    return format_event({"id": None, "kind": "error",
                         "data": {"error": {"message": message, "type": type_, "code": code}}})


def _resume_point(header: str | None, query: int | None) -> int | None:
    if query is not None:
        return query
    if header is None or not header.strip():
        return None
    try:
        value = event_id(header)  # 0 to 2^63-1, else 422
    except ValueError:
        raise ValidationError(f"Last-Event-ID must be an integer event id, got {header[:40]!r}") from None
    if value < 0:
        raise ValidationError("Last-Event-ID must be >= 0")
    return value


class _Access:
    """Re-checks, every ``RECHECK_SECONDS``, the credentials a stream was opened with."""

    def __init__(self, request: Request) -> None:
        self.auth = getattr(request.app.state, "auth", None)
        self.principal = getattr(request.state, "principal", None)
        self.headers = {k.lower(): v for k, v in request.headers.items()}
        self._next = time.monotonic() + RECHECK_SECONDS

    async def revoked(self) -> str | None:
        """Why the stream may no longer be served, or None."""
        if self.auth is None or time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + RECHECK_SECONDS
        try:
            if self.principal is None:
                if await self.auth.keys_required():
                    return "this server now requires an API key; reconnect with one"
                return None
            now = await self.auth.identify(self.headers)
        except AuthenticationError as e:
            return f"{e.message}; the event stream ends"
        except Exception:  # the store cannot tell now (an outage): keep serving what it can
            return None
        if now is None or now.key_id != self.principal.key_id:
            return "the credentials of this stream are no longer valid"
        return None


async def _feed(stream: AsyncIterator[dict[str, Any] | None], queue: asyncio.Queue[Any]) -> None:
    """Copy the pool's subscription into ``queue``; its end or failure is queued too."""
    try:
        async for event in stream:
            await queue.put(event)
        await queue.put(_END)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.warning("event stream failed: %s: %s", type(e).__name__, e)
        await queue.put(e)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def _frames(request: Request, queue: asyncio.Queue[Any], heartbeat: float) -> AsyncIterator[bytes]:
    access = _Access(request)
    last_write = time.monotonic()
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), TICK_SECONDS)
        except TimeoutError:
            item = None
        reason = await access.revoked()
        if reason is not None:
            yield error_event(reason, "key_revoked", "authentication_error")
            return
        if item is _END:
            return
        if isinstance(item, BaseException):
            yield error_event("the event stream failed; reconnect with Last-Event-ID", "stream_failed",
                              "internal_error")
            return
        if item is None:
            if time.monotonic() - last_write >= heartbeat:
                last_write = time.monotonic()
                yield b": heartbeat\n\n"
            continue
        last_write = time.monotonic()
        yield format_event(item)


@router.get("/events", summary="Server-Sent Events (step, trajectory, group, curation, reward, batch, policy)",
            response_class=StreamingResponse)
async def events(
    request: Request,
    last_event_id: Annotated[int | None, Query(ge=0, le=2**62, description="Resume after this event id.")] = None,
    kinds: Annotated[str | None, Query(max_length=512, description="Comma-separated kinds to keep.")] = None,
    heartbeat: Annotated[float, Query(ge=0.5, le=120, description="Seconds between heartbeats.")] = 15.0,
) -> Response:
    after = _resume_point(request.headers.get("last-event-id"), last_event_id)
    wanted = {k.strip() for k in kinds.split(",") if k.strip()} if kinds else None
    pool = pool_of(request)

    async def body() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_SIZE)
        feeder = asyncio.create_task(_feed(pool.subscribe(after, wanted, heartbeat), queue))
        try:
            yield b"retry: 2000\n: connected\n\n"
            async for frame in _frames(request, queue, heartbeat):
                yield frame
        finally:
            feeder.cancel()
            await asyncio.wait([feeder])  # its subscription is closed before the response ends

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
