"""``/api/v1/trajectories`` and ``/api/v1/groups``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from ..filters import TrajectoryQuery
from ..records import CompleteIn, GroupIn, GroupStatus, TrajectoryIn
from .common import documented_body, new_id, page_answer, pool_of, settings_of, trajectory_urls
from .params import DEFAULT_LIMIT, Cursor, Limit, NameFilter, PathId, compact
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["trajectories"])


@router.post("/trajectories", status_code=201, openapi_extra=documented_body(TrajectoryIn),
             summary="Open a trajectory; answers the base URLs its agent should use")
async def post_trajectory(request: Request) -> Response:
    """With ``session_key: true`` the answer also holds ``api_key`` (shown once) and its ``key_id``: a key
    of scope ``agent`` bound to this trajectory, its group, channel and metadata. An agent that can only be
    given a base URL (``{server}/v1``) and an API key lands every gateway call here."""
    body = await read_model(request, TrajectoryIn)
    tid = body.trajectory_id or new_id()
    pool = pool_of(request)
    t = await pool.create_trajectory(tid, body.group_id, body.group_size, body.channel, body.metadata)
    answer = {"trajectory_id": tid, "group_id": t.get("group_id", body.group_id)}
    answer.update(trajectory_urls(settings_of(request), tid))
    if body.session_key:
        binding = {"trajectory_id": tid, "group_id": body.group_id, "channel": body.channel,
                   "metadata": body.metadata or None}
        rec, secret = await pool.create_key("agent", "session", {k: v for k, v in binding.items() if v is not None})
        # no cache to invalidate: a new secret was never looked up, and bound keys leave has_keys() as it was
        answer.update(api_key=secret, key_id=rec.key_id)
    return ok(answer, 201)


@router.get("/trajectories", summary="List trajectories")
async def list_trajectories(request: Request, filters: Annotated[TrajectoryQuery, Query()],
                            cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT) -> Response:
    """Filters: the fields of ``TrajectoryFilter`` (``continuity=fork`` lists trajectories holding at least
    one step with that continuity)."""
    return page_answer(await pool_of(request).list_trajectories(filters.query(), cursor, limit))


@router.get("/trajectories/{trajectory_id}", summary="One trajectory with its steps (full ids)")
async def get_trajectory(request: Request, trajectory_id: PathId, steps: bool = True) -> Response:
    return ok(await pool_of(request).get_trajectory(trajectory_id, with_steps=steps))


@router.post("/trajectories/{trajectory_id}/complete", openapi_extra=documented_body(CompleteIn, required=False),
             summary="Complete a trajectory, optionally with its outcome reward")
async def complete_trajectory(request: Request, trajectory_id: PathId) -> Response:
    raw = await request.body()
    body = await read_model(request, CompleteIn) if raw.strip() else CompleteIn()
    t = await pool_of(request).complete_trajectory(trajectory_id, body.reward, body.metadata)
    return ok(t)


@router.delete("/trajectories/{trajectory_id}", summary="Delete a trajectory, its steps, curation and rewards")
async def delete_trajectory(request: Request, trajectory_id: PathId) -> Response:
    await pool_of(request).delete_trajectory(trajectory_id)
    return ok({"deleted": True, "trajectory_id": trajectory_id})


@router.post("/groups", status_code=201, openapi_extra=documented_body(GroupIn),
             summary="Open a group of n trajectories")
async def post_group(request: Request) -> Response:
    body = await read_model(request, GroupIn)
    gid = body.group_id or new_id()
    tids = [new_id() for _ in range(body.n)]
    await pool_of(request).create_group(gid, body.n, body.channel, body.metadata, tids)
    settings = settings_of(request)
    trajectories = [{"trajectory_id": t, **trajectory_urls(settings, t)} for t in tids]
    return ok({"group_id": gid, "trajectories": trajectories}, 201)


@router.get("/groups", summary="List groups")
async def list_groups(request: Request, channel: NameFilter = None, status: GroupStatus | None = None,
                      cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT) -> Response:
    filters = compact(channel=channel, status=status)
    return page_answer(await pool_of(request).list_groups(filters, cursor, limit))


@router.get("/groups/{group_id}", summary="One group")
async def get_group(request: Request, group_id: PathId) -> Response:
    return ok(await pool_of(request).get_group(group_id))
