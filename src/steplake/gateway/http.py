"""Thin Starlette helpers: raw-body JSON parsing with orjson and protocol-shaped responses."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ANTHROPIC_TYPES, BadRequestError, PayloadTooLargeError, SteplakeError, UpstreamFailure
from ..types import Json

Protocol = Literal["openai", "anthropic"]

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error", 502: "upstream_error",
                 503: "service_unavailable", 504: "upstream_error"}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


async def read_json(request: Request, max_bytes: int) -> Json:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequestError(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    return data


def error_body(protocol: Protocol, status: int, message: str, etype: str | None = None,
               code: str | None = None) -> Json:
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": etype or _OPENAI_TYPES.get(status, "api_error"),
                      "code": code}}


def steplake_error_response(protocol: Protocol, e: SteplakeError) -> Response:
    body = e.to_anthropic() if protocol == "anthropic" else e.to_openai()
    return json_response(body, e.status)


def upstream_error_body(protocol: Protocol, e: UpstreamFailure) -> Json:
    """The upstream's own error body when it is already in the agent's protocol, else a converted one."""
    b = e.body
    if protocol == "openai" and isinstance(b, dict) and isinstance(b.get("error"), dict):
        return b
    if protocol == "anthropic" and isinstance(b, dict) and b.get("type") == "error":
        return b
    return error_body(protocol, e.status, e.message, code=e.code)


def upstream_error_response(protocol: Protocol, e: UpstreamFailure) -> Response:
    return json_response(upstream_error_body(protocol, e), e.status)


__all__ = ["json_response", "read_json", "error_body", "steplake_error_response", "upstream_error_body",
           "upstream_error_response", "Protocol"]
