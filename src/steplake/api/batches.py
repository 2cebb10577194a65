"""``/api/v1/batches`` and ``/api/v1/policy``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFoundError, SteplakeError, UpstreamError
from ..records import BatchIn, PolicyIn
from .common import documented_body, gateway_of, pool_of
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
    b = await asyncio.to_thread(pool_of(request).store.get_batch, batch_id)
    if b is None:
        raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
    return ok(b)


@router.post("/policy", openapi_extra=documented_body(PolicyIn),
             summary="Publish a new policy version (must increase); the gateway reloads its weights")
async def post_policy(request: Request) -> Response:
    body = await read_model(request, PolicyIn)
    policy = await pool_of(request).publish_policy(body.version, body.weights_path, body.note)
    answer: dict[str, Any] = dict(policy)
    answer["gateway"] = await _tell_gateway(request, policy)
    return ok(answer)


async def _tell_gateway(request: Request, policy: dict[str, Any]) -> Any:
    gateway = gateway_of(request)
    if gateway is None:
        return None
    try:
        return await gateway.publish_policy(policy)
    except SteplakeError as e:
        e.message = f"policy version {policy.get('version')} was recorded, but the gateway failed: {e.message}"
        e.args = (e.message,)
        raise
    except Exception as e:
        raise UpstreamError(f"policy version {policy.get('version')} was recorded, but the gateway failed to "
                            f"load it: {type(e).__name__}: {e}", code="policy_reload_failed") from e


@router.get("/policy", summary="The published policy")
async def get_policy(request: Request) -> Response:
    return ok(await pool_of(request).get_policy())
