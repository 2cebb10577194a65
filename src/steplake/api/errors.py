"""Exception handlers: every error leaves the server in the caller's protocol shape.

``/api/v1`` and OpenAI paths: ``{"error": {"message", "type", "code"}}``. Anthropic paths (``/v1/messages``
and ``/t/{id}/v1/messages``, ``count_tokens`` included): ``{"type": "error", "error": {"type", "message"}}``.
Bad input never becomes a 500: request validation → 422 (400 for unparsable JSON), unknown routes → 404,
wrong methods → 405.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import pydantic
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    SteplakeError,
)
from .responses import JSONResponse, describe_errors

log = logging.getLogger("steplake.api")


def is_anthropic_path(path: str) -> bool:
    return path.endswith("/v1/messages") or "/v1/messages/" in path


def error_response(path: str, err: SteplakeError, status: int | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = err.to_anthropic() if is_anthropic_path(path) else err.to_openai()
    return JSONResponse(body, status_code=status or err.status, headers=headers)


class _HttpStatusError(SteplakeError):
    """Carrier for statuses without a class of their own (405, 406, 415, ...)."""

    type = "invalid_request_error"


def _from_http_exception(request: Request, exc: StarletteHTTPException) -> SteplakeError:
    if exc.status_code == 404:
        detail = exc.detail if exc.detail and exc.detail != "Not Found" else None
        return NotFoundError(detail or f"no route for {request.method} {request.url.path}", code="route_not_found")
    if exc.status_code == 405:
        return _HttpStatusError(f"method {request.method} is not allowed on {request.url.path}",
                                code="method_not_allowed")
    if exc.status_code == 403:
        return PermissionDeniedError(str(exc.detail))
    return _HttpStatusError(str(exc.detail), code=f"http_{exc.status_code}")


async def _steplake_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SteplakeError)
    if exc.status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(request.url.path, exc)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    err = _from_http_exception(request, exc)
    err.status = exc.status_code
    return error_response(request.url.path, err, status=exc.status_code, headers=exc.headers)


def _request_validation(errors: list[Any]) -> SteplakeError:
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequestError("request body is not valid JSON", code="invalid_json")
    from ..errors import ValidationError

    message, details = describe_errors(errors)
    return ValidationError(message, details=details)


async def _request_validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(request.url.path, _request_validation(list(exc.errors())))


async def _pydantic_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, pydantic.ValidationError)
    errors = exc.errors(include_url=False, include_context=False)
    return error_response(request.url.path, _request_validation(list(errors)))


def _unstorable(exc: Exception) -> SteplakeError | None:
    """Bad values that got past validation and were refused by the database (a NUL in PostgreSQL text, an
    integer beyond a column's range): the caller's fault, so a 422, never a 500 — on either backend."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.DataError):
        from ..errors import ValidationError

        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ValidationError(f"value not storable: {first}", code="invalid_value")
    if isinstance(exc, OverflowError):
        from ..errors import ValidationError

        return ValidationError(f"a number is out of range: {exc}", code="invalid_value")
    return None


async def _unstorable_handler(request: Request, exc: Exception) -> Response:
    err = _unstorable(exc)
    if err is None:
        return await _unexpected_handler(request, exc)
    log.info("%s %s -> 422: %s", request.method, request.url.path, err.message)
    return error_response(request.url.path, err)


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    err = SteplakeError(f"internal error ({type(exc).__name__}); see the server log")
    return error_response(request.url.path, err)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SteplakeError, _steplake_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _request_validation_handler)
    app.add_exception_handler(pydantic.ValidationError, _pydantic_handler)
    app.add_exception_handler(OverflowError, _unstorable_handler)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency; a build without it has no PostgreSQL store either
        return
    app.add_exception_handler(psycopg.DataError, _unstorable_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


__all__ = ["install_error_handlers", "error_response", "is_anthropic_path"]
