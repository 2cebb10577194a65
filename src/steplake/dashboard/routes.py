"""Routes of the dashboard: the page, its static files and its helper endpoints.

The page and the static files carry a strict Content-Security-Policy (no inline script or style, nothing
from another origin). With API keys configured, ``/`` answers 401 (the same shell, which then shows the
sign-in form) unless the request carries a valid session cookie; the static files hold no data and are
open. The helpers under ``/api/v1/dashboard`` go through the API's key and scope checks like every
``/api/v1`` route.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..api.params import RequiredId
from ..errors import NotFoundError, SteplakeError, ValidationError
from ..filters import TrajectoryFilter, parse_filter
from ..records import CurationIn
from ..store.base import Json
from .tokens import decoder_of

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "x-frame-options": "DENY", "referrer-policy": "no-referrer"}
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
OVERVIEW_TTL = 10.0
OVERVIEW_MIN_AGE = 0.5
MAX_POINTS = 500
MAX_TOKENS = 50_000
MAX_MATCHING = 100_000

router = APIRouter(include_in_schema=True, tags=["dashboard"])


def _json(content: Any, status: int = 200) -> Response:
    from ..api.responses import ok

    return ok(content, status)


async def _signed_in(request: Request) -> bool:
    auth = getattr(request.app.state, "auth", None)
    if auth is None or not await auth.keys_required():
        return True
    try:
        principal = await auth.identify({k.lower(): v for k, v in request.headers.items()})
    except SteplakeError:
        return False
    return principal is not None and principal.scope == "admin"


@router.get("/", include_in_schema=False)
async def page(request: Request) -> Response:
    """The single-page app; 401 (with the sign-in shell) when keys are configured and no session is sent."""
    status = 200 if await _signed_in(request) else 401
    if status == 200:
        decoder_of(request.app.state).warm()
    headers = {**SECURITY_HEADERS, "cache-control": "no-store"}
    return FileResponse(STATIC / "index.html", status_code=status, headers=headers, media_type=MEDIA[".html"])


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str) -> Response:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC.resolve()) or not target.is_file() or target.suffix not in MEDIA:
        raise NotFoundError(f"no static file {path[:200]!r}", code="not_found")
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache"}
    return FileResponse(target, headers=headers, media_type=MEDIA[target.suffix])


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type=MEDIA[".svg"], headers={"cache-control": "max-age=86400"})


@router.get("/api/v1/dashboard/overview", summary="Dashboard overview: counters, steps over time, rewards, funnel")
async def get_overview(
    request: Request,
    window: Annotated[float, Query(ge=60, le=7 * 86400, description="Seconds of history in the series.")] = 1800,
    bucket: Annotated[float, Query(ge=1, le=86400, description="Seconds per point of the series.")] = 30,
) -> Response:
    if window / bucket > MAX_POINTS:
        raise ValidationError(f"window / bucket must be at most {MAX_POINTS} points", code="too_many_points")
    """Recomputed when the pool changed since the last answer, at most once per ``OVERVIEW_MIN_AGE`` seconds,
    and at least every ``OVERVIEW_TTL`` seconds (the time axis moves)."""
    state = request.app.state
    pool = state.pool
    key = (window, bucket)
    cache: dict[tuple[float, float], tuple[float, Any, Json]] = state.__dict__.setdefault("_dashboard_cache", {})
    hit = cache.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > OVERVIEW_TTL or (hit[1].is_set() and now - hit[0] > OVERVIEW_MIN_AGE):
        marker = pool.change_marker()
        stats, agg = await asyncio.gather(pool.stats(), pool.overview(window, bucket))
        gateway = getattr(state, "gateway", None)
        stats["gateway"] = gateway.stats() if gateway is not None else None
        hit = (now, marker, {**agg, "stats": stats})
        cache.clear()
        cache[key] = hit
    return _json(hit[2])


@router.get("/api/v1/dashboard/tokens", summary="A step's tokens decoded one by one (token view)")
async def get_tokens(request: Request, step_id: RequiredId) -> Response:
    """Ids, logprobs and each id's text (at most ``MAX_TOKENS`` per side), so the page never needs a step's
    full ids in its lists."""
    step = await request.app.state.pool.get_step(step_id)
    prompt: list[int] = list(step.get("prompt_ids") or [])[:MAX_TOKENS]
    response: list[int] = list(step.get("response_ids") or [])[:MAX_TOKENS]
    logprobs = step.get("response_logprobs")
    dec = decoder_of(request.app.state)
    texts = await dec.decode_async(prompt + response)
    return _json({
        "step_id": step_id, "tokenizer": dec.name, "tokenizer_error": dec.error,
        "prompt": texts[:len(prompt)], "response": texts[len(prompt):],
        "prompt_ids": prompt, "response_ids": response,
        "response_logprobs": list(logprobs)[:MAX_TOKENS] if logprobs is not None else None,
        "shared_prefix_len": step.get("shared_prefix_len"), "continuity": step.get("continuity"),
        "truncated": len(step.get("prompt_ids") or []) > MAX_TOKENS or len(step.get("response_ids") or []) > MAX_TOKENS,
    })


class MatchingCurationIn(BaseModel):
    """Curate every trajectory matching a list filter (the query parameters of ``GET /trajectories``)."""

    model_config = ConfigDict(extra="forbid")
    filters: dict[str, Any] = Field(default_factory=dict)
    quality: str | None = None
    trainable: bool | None = None
    tags_add: list[str] | None = None
    tags_remove: list[str] | None = None
    note: str | None = None
    reviewer: str | None = None


@router.post("/api/v1/dashboard/curate", summary="Curate every trajectory matching a list filter")
async def curate_matching(request: Request) -> Response:
    from ..api.responses import read_model, validation_error

    body = await read_model(request, MatchingCurationIn)
    filters = parse_filter(body.filters, TrajectoryFilter).query()  # the list's query-string values, typed
    pool = request.app.state.pool
    ids: list[str] = await pool.trajectory_ids_matching(filters, MAX_MATCHING + 1)
    if len(ids) > MAX_MATCHING:
        raise ValidationError(f"more than {MAX_MATCHING} trajectories match; narrow the filter", code="too_many")
    if not ids:
        return _json({"matched": 0, "updated": 0})
    try:
        change = CurationIn.model_validate({"trajectory_ids": ids, **body.model_dump(exclude={"filters"},
                                                                                      exclude_none=True)})
    except pydantic.ValidationError as e:
        raise validation_error(e.errors()) from None
    updated = await pool.curate(change)
    return _json({"matched": len(ids), "updated": updated})


__all__ = ["router", "CSP"]
