"""``GET /api/v1/events``: Server-Sent Events from the pool's event log.

Each event is ``id: <event id>``, ``event: <kind>``, ``data: <json>``; heartbeats are SSE comments.
Resume with the ``Last-Event-ID`` header (browsers send it on reconnect) or ``?last_event_id=``; without
either the stream starts at the current end. ``?kinds=step,trajectory`` keeps only those kinds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import ValidationError
from .common import pool_of
from .responses import dumps

router = APIRouter(prefix="/api/v1", tags=["events"])

EVENT_KINDS = ("step", "trajectory", "group", "curation", "reward", "batch", "policy", "feedback")


def format_event(event: dict[str, Any]) -> bytes:
    data = event.get("data")
    if data is None:
        data = {k: v for k, v in event.items() if k not in ("id", "kind")}
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (int(event["id"]), str(event["kind"]).encode(), dumps(data))


def _resume_point(header: str | None, query: int | None) -> int | None:
    if query is not None:
        return query
    if header is None or not header.strip():
        return None
    try:
        value = int(header.strip())
    except ValueError:
        raise ValidationError(f"Last-Event-ID must be an integer event id, got {header[:40]!r}") from None
    if value < 0:
        raise ValidationError("Last-Event-ID must be >= 0")
    return value


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
    stream = pool_of(request).subscribe(after, wanted, heartbeat)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n: connected\n\n"
            async for event in stream:
                yield b": heartbeat\n\n" if event is None else format_event(event)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
