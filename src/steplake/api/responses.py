"""Fast JSON responses (orjson) and request-body parsing shared by every route module."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import orjson
import pydantic
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequestError, ValidationError
from ..records import NO_NUL_PATTERN, NUL_MESSAGE

M = TypeVar("M", bound=BaseModel)

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
OFFLOAD_BYTES = 256 * 1024


def dumps(content: Any) -> bytes:
    """orjson, falling back to ``json`` for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(content, option=_OPTS)
    except TypeError:
        return json.dumps(content, default=str).encode()


class JSONResponse(Response):
    """Starlette's JSONResponse with orjson: faster, and NaN/inf become ``null`` instead of a 500."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def ok(content: Any, status_code: int = 200) -> JSONResponse:
    """Answer ``content`` as JSON; route handlers return this so FastAPI skips its slow encoder."""
    return JSONResponse(content, status_code=status_code)


def format_loc(loc: tuple[int | str, ...] | list[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_errors(errors: list[Any], *, limit: int = 5) -> tuple[str, list[dict[str, Any]]]:
    """One readable message naming each field path, plus a JSON-safe detail list (at most 20)."""
    parts: list[str] = []
    details: list[dict[str, Any]] = []
    for e in errors:
        loc = format_loc(tuple(e.get("loc", ())))
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if NO_NUL_PATTERN in msg:  # ids and filters in the path or query: say why, not the pattern
            msg = NUL_MESSAGE
        if len(parts) < limit:
            parts.append(f"{loc or 'body'}: {msg}")
        if len(details) < 20:
            details.append({"loc": [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())],
                            "msg": msg, "type": str(e.get("type", ""))})
    more = len(errors) - len(parts)
    message = "; ".join(parts) + (f" (and {more} more errors)" if more > 0 else "")
    return message or "invalid request", details


def validation_error(errors: list[Any]) -> ValidationError:
    message, details = describe_errors(errors)
    return ValidationError(message, details=details)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequestError("request body is empty; send a JSON object", code="empty_body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "number is infinity" in str(e):  # 1e309: well-formed JSON, but not a finite number
            raise ValidationError(f"non-finite number refused: {e}", code="non_finite_number") from None
        raise BadRequestError(f"request body is not valid JSON: {e}", code="invalid_json") from None


async def read_model(request: Request, model: type[M]) -> M:
    """Read the raw body (bounded by the body-limit middleware), parse it with orjson and validate it.

    Bad JSON → 400; well-formed JSON breaking the model → 422 naming the field path.
    """
    raw = await request.body()
    if len(raw) > OFFLOAD_BYTES:  # keep the event loop (gateway traffic) responsive during big ingests
        return await asyncio.to_thread(parse_model, raw, model)
    return parse_model(raw, model)


def parse_model(raw: bytes, model: type[M]) -> M:
    data = parse_json(raw)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error(e.errors(include_url=False, include_context=False)) from None


__all__ = ["JSONResponse", "ok", "dumps", "read_model", "parse_model", "parse_json", "describe_errors", "validation_error",
           "format_loc"]
