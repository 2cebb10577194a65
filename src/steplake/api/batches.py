"""``/api/v1/batches`` and ``/api/v1/policy``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..records import BatchIn, PolicyIn
from .common import documented_body, gateway_of, pool_of, settings_of
from .params import PathId
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["batches"])


@router.post("/batches", openapi_extra=documented_body(BatchIn),
             summary="Lease a training-ready batch (CONTRACT §4); groups: [] when none is ready in time")
async def post_batch(request: Request) -> Response:
    return ok(await pool_of(request).fetch_batch(await read_model(request, BatchIn)))


@router.post("/batches/{batch_id}/ack", summary="Mark a leased batch consumed")
async def ack_batch(request: Request, batch_id: PathId) -> Response:
    return ok(await pool_of(request).ack_batch(batch_id))


@router.get("/batches/{batch_id}", summary="A recorded batch")
async def get_batch(request: Request, batch_id: PathId) -> Response:
    return ok(await pool_of(request).get_batch(batch_id))


@router.post("/policy", openapi_extra=documented_body(PolicyIn),
             summary="Publish a new policy version (must increase). With weights_path: reload every reloadable "
                     "upstream first and record only if all succeeded, else 502 policy_reload_failed")
async def post_policy(request: Request) -> Response:
    body = await read_model(request, PolicyIn)
    gateway = gateway_of(request)
    if gateway is not None:
        return ok(await gateway.publish_policy(body.version, body.weights_path, body.note))
    path = body.weights_path
    if path is not None:  # no gateway, nothing to reload: the same rule for the path
        from ..gateway.policy import check_weights_path

        path = check_weights_path(path, settings_of(request).weights_root)
    answer: dict[str, Any] = dict(await pool_of(request).publish_policy(body.version, path, body.note))
    answer["gateway"] = None
    return ok(answer)


@router.get("/policy", summary="The published policy")
async def get_policy(request: Request) -> Response:
    return ok(await pool_of(request).get_policy())
