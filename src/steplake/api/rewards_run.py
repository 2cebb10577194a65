"""``POST /api/v1/rewards/run``: score trajectories now with the configured reward functions.

A re-run stores new records (with ``version``, when given, replacing the functions' own versions) and
keeps the old ones; the trajectory's scalar follows the latest. 400 ``no_rewards`` when the server has no
``rewards`` settings.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequestError
from ..exports import LOCAL_FILTERS, normalize_filters
from ..records import Metadata, NoNul
from .common import documented_body, pool_of
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["curation"])
MAX_TRAJECTORIES = 10_000
Id = Annotated[str, Field(min_length=1, max_length=128), NoNul]


class RewardsRunIn(BaseModel):
    """Which trajectories to score: ``trajectory_ids``, or ``filter`` (trajectory list filters; only
    complete trajectories are scored)."""

    model_config = ConfigDict(extra="forbid")

    trajectory_ids: Annotated[list[Id], Field(max_length=MAX_TRAJECTORIES)] | None = None
    filter: Metadata | None = None
    version: Annotated[str, Field(min_length=1, max_length=64), NoNul] | None = None


def _run_filter(raw: dict[str, Any]) -> dict[str, Any]:
    """The list filter of a reward run (complete trajectories unless it says otherwise)."""
    f = normalize_filters(raw)
    local = sorted(set(f) & LOCAL_FILTERS)
    if local:
        raise BadRequestError(f"filter(s) {', '.join(local)} do not apply to reward runs", code="bad_filter")
    f.setdefault("status", "complete")
    return f


@router.post("/rewards/run", openapi_extra=documented_body(RewardsRunIn),
             summary="Run the configured reward functions now (a re-run with a new version keeps old values)")
async def run_rewards(request: Request) -> Response:
    body = await read_model(request, RewardsRunIn)
    pool = pool_of(request)
    if pool.rewarder is None:
        await pool.run_rewards([])  # raises the 400 no_rewards error
    if body.trajectory_ids is None and body.filter is None:
        raise BadRequestError("give trajectory_ids or filter", code="missing_target")
    tids = list(body.trajectory_ids or [])
    if body.filter is not None:
        tids += await pool.trajectory_ids_matching(_run_filter(body.filter), MAX_TRAJECTORIES)
    rewards = await pool.run_rewards(list(dict.fromkeys(tids)), version=body.version)
    return ok({"scored": len(rewards), "trajectories": len(set(tids)), "rewards": rewards})


__all__ = ["router", "RewardsRunIn"]
