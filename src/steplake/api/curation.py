"""``/api/v1/rewards``, ``/api/v1/curation`` and ``/api/v1/feedback``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequestError
from ..records import CurationIn, FeedbackIn, FeedbackKind, RewardIn
from ..rewards.secrets import redact_reward
from .common import documented_body, pool_of
from .params import IdFilter, RequiredId, compact
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["curation"])


@router.post("/rewards", openapi_extra=documented_body(RewardIn), summary="Attach a reward component")
async def post_reward(request: Request) -> Response:
    return ok(await pool_of(request).add_reward(await read_model(request, RewardIn)))


@router.get("/rewards", summary="Reward components of a trajectory or a step")
async def list_rewards(request: Request, trajectory_id: IdFilter = None, step_id: IdFilter = None) -> Response:
    if trajectory_id is None and step_id is None:
        raise BadRequestError("give trajectory_id or step_id", code="missing_target")
    items = await pool_of(request).list_rewards(trajectory_id, step_id)
    return ok({"items": [redact_reward(r) for r in items], "next_cursor": None})  # old records: params masked


@router.post("/curation", openapi_extra=documented_body(CurationIn),
             summary="Label steps or trajectories (quality, trainable, tags, note)")
async def post_curation(request: Request) -> Response:
    n = await pool_of(request).curate(await read_model(request, CurationIn))
    return ok({"updated": n})


@router.get("/curation/history", summary="Every curation change of a step or trajectory")
async def curation_history(request: Request,
                           target_id: RequiredId) -> Response:
    items = await pool_of(request).curation_history(target_id)
    return ok({"items": items, "next_cursor": None})


@router.post("/feedback", openapi_extra=documented_body(FeedbackIn), summary="Human feedback on a step or trajectory")
async def post_feedback(request: Request) -> Response:
    return ok(await pool_of(request).add_feedback(await read_model(request, FeedbackIn)))


@router.get("/feedback", summary="List feedback")
async def list_feedback(request: Request, trajectory_id: IdFilter = None, step_id: IdFilter = None,
                        kind: FeedbackKind | None = None) -> Response:
    filters = compact(trajectory_id=trajectory_id, step_id=step_id, kind=kind)
    items = await pool_of(request).list_feedback(filters)
    return ok({"items": items, "next_cursor": None})
