"""``/api/v1/stats``, ``/api/v1/session`` (dashboard sign-in) and ``/api/v1/keys``."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ..errors import AuthenticationError, NotFoundError, PermissionDeniedError, SteplakeError
from ..records import KeyIn
from .auth import SESSION_COOKIE, SESSION_SECONDS, Auth, cookie_value
from .common import documented_body, gateway_of, pool_of, settings_of
from .params import PathId
from .responses import JSONResponse, ok, read_model

router = APIRouter(prefix="/api/v1", tags=["admin"])


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(min_length=1, max_length=512)]


def auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


@router.get("/stats", summary="Counters of the pool, captures and gateway")
async def stats(request: Request) -> Response:
    answer: dict[str, Any] = await pool_of(request).stats()
    gateway = gateway_of(request)
    answer["gateway"] = gateway.stats() if gateway is not None else None
    return ok(answer)


@router.get("/session", summary="Who am I (dashboard)")
async def get_session(request: Request) -> Response:
    auth = auth_of(request)
    required = await auth.keys_required()
    answer: dict[str, Any] = {"keys_required": required, "authenticated": not required, "scope": None,
                              "key_id": None}
    if not required:
        answer["scope"] = "admin"
        return ok(answer)
    try:
        p = await auth.identify({k.lower(): v for k, v in request.headers.items()})
    except SteplakeError:
        p = None
    if p is not None:
        answer.update(authenticated=True, scope=p.scope, key_id=p.key_id)
    return ok(answer)


@router.post("/session", openapi_extra=documented_body(SessionIn),
             summary="Sign the dashboard in with an admin key; sets the HttpOnly session cookie")
async def post_session(request: Request) -> Response:
    body = await read_model(request, SessionIn)
    auth = auth_of(request)
    if not await auth.keys_required():
        return ok({"keys_required": False, "authenticated": True, "scope": "admin", "key_id": None})
    rec = await auth.lookup(body.key)
    if rec is None:
        raise AuthenticationError("invalid or revoked API key")
    if rec.scope != "admin":
        raise PermissionDeniedError(f"the dashboard needs an admin key; this key has scope {rec.scope!r}")
    token = auth.open_session(rec)
    resp = JSONResponse({"keys_required": True, "authenticated": True, "scope": rec.scope,
                         "key_id": rec.key_id})
    secure = request.url.scheme == "https" or (settings_of(request).public_url or "").startswith("https:")
    resp.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_SECONDS), path="/", httponly=True,
                    samesite="strict", secure=secure)
    return resp


@router.delete("/session", summary="Sign the dashboard out")
async def delete_session(request: Request) -> Response:
    auth_of(request).close_session(cookie_value(request.headers.get("cookie", ""), SESSION_COOKIE))
    resp = JSONResponse({"authenticated": False})
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp


@router.get("/keys", summary="List API keys (never their secrets)")
async def list_keys(request: Request) -> Response:
    keys = await pool_of(request).list_keys()
    return ok({"items": [asdict(k) for k in keys], "next_cursor": None})


@router.post("/keys", status_code=201, openapi_extra=documented_body(KeyIn),
             summary="Create an API key; the secret is shown once")
async def create_key(request: Request) -> Response:
    body = await read_model(request, KeyIn)
    rec, secret = await pool_of(request).create_key(body.scope, body.name, body.binding)
    auth_of(request).invalidate()
    return ok({**asdict(rec), "secret": secret}, 201)


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(request: Request, key_id: PathId) -> Response:
    if not await auth_of(request).revoke_key(key_id):  # 409 for the last admin key beyond loopback
        raise NotFoundError(f"key {key_id!r} not found", code="key_not_found")
    return ok({"key_id": key_id, "revoked": True, "revoked_at": time.time()})
