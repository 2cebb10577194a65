"""``/api/v1/steps``: ingest (durable before 2xx) and reads."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..records import Continuity, StepsIn
from .common import documented_body, page_answer, pool_of
from .params import DEFAULT_LIMIT, Cursor, IdFilter, Limit, NameFilter, PathId, Version, compact
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["steps"])


@router.post("/steps", openapi_extra=documented_body(StepsIn), summary="Submit steps (durable on 2xx)")
async def post_steps(request: Request) -> Response:
    body = await read_model(request, StepsIn)
    res = await pool_of(request).append_steps(body.steps)
    return ok({"accepted": res.accepted, "duplicates": res.duplicates, "step_ids": res.step_ids})


@router.get("/steps", summary="List steps")
async def list_steps(request: Request, trajectory_id: IdFilter = None, group_id: IdFilter = None,
                     channel: NameFilter = None, continuity: Continuity | None = None,
                     policy_version: Version = None, fields: Literal["full", "meta"] = "full",
                     cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT) -> Response:
    """``fields=meta`` omits ``prompt_ids``, ``response_ids`` and ``response_logprobs`` (faster lists)."""
    filters = compact(trajectory_id=trajectory_id, group_id=group_id, channel=channel, continuity=continuity,
                      policy_version=policy_version)
    page = await pool_of(request).list_steps(filters, cursor, limit, fields == "full")
    return page_answer(page)


@router.get("/steps/{step_id}", summary="One step, with full token ids")
async def get_step(request: Request, step_id: PathId) -> Response:
    return ok(await pool_of(request).get_step(step_id))
