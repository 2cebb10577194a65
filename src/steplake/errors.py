"""One exception tree for steplake.

Every error carries an HTTP status, an OpenAI-style ``type`` and a short machine ``code``. The HTTP edges
translate them into the caller's protocol (OpenAI ``{"error": {...}}`` on ``/api/v1`` and ``/v1``,
Anthropic ``{"type": "error", "error": {...}}`` on ``/v1/messages``); the CLI prints the message and exits 2.
"""

from __future__ import annotations

from typing import Any


class SteplakeError(Exception):
    """Base class. ``status`` is the HTTP status the edge answers with."""

    status: int = 500
    type: str = "internal_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_openai(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}

    def to_anthropic(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(self.status, "api_error"),
                                           "message": self.message}}


class BadRequestError(SteplakeError):
    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class ValidationError(BadRequestError):
    """Well-formed JSON whose fields break the contract (wrong types, lengths, ranges)."""

    status = 422
    code = "validation_error"


class PayloadTooLargeError(BadRequestError):
    status = 413
    code = "payload_too_large"


class RequestTimeoutError(BadRequestError):
    """The client sent its request body too slowly (408)."""

    status = 408
    code = "request_timeout"


class UnsupportedMediaTypeError(BadRequestError):
    """A JSON route got a ``text/plain``, form or multipart body (415)."""

    status = 415
    code = "unsupported_media_type"


class MisdirectedRequestError(BadRequestError):
    """The ``Host`` header names a host this server does not answer for (421, DNS rebinding)."""

    status = 421
    code = "unknown_host"


class AuthenticationError(SteplakeError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(SteplakeError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFoundError(SteplakeError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ResponseNotFoundError(NotFoundError):
    """An OpenAI Responses id (``resp_...``) naming no retrievable response: unknown, or ``store: false``
    (404 with OpenAI's ``invalid_request_error`` type)."""

    type = "invalid_request_error"
    code = "response_not_found"


class ConflictError(SteplakeError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class RateLimitError(SteplakeError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamError(SteplakeError):
    """The inference server failed or could not be reached (502)."""

    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


_UPSTREAM_CODES = {502: "upstream_unavailable", 503: "not_ready", 504: "upstream_timeout"}


class UpstreamFailure(UpstreamError):
    """An upstream call failed before anything reached the agent; the gateway answers it in the agent's
    protocol (the upstream's own error body when it sent one in that protocol).

    ``status`` is per failure: the upstream's for 4xx/429/5xx, 502 unreachable, 504 timeout, 503 nothing
    ready; ``code`` follows it (``upstream_<status>`` for the upstream's own); ``retryable`` lets the router
    try another upstream.
    """

    def __init__(self, status: int, message: str, body: Any = None, retryable: bool = False) -> None:
        super().__init__(message, code=_UPSTREAM_CODES.get(status, f"upstream_{status}"))
        self.status = status
        self.body = body
        self.retryable = retryable


class JudgeError(UpstreamError):
    """An LLM judge's endpoint could not be reached or answered something unusable (the judge records a
    failed score; it is never answered to a caller)."""

    code = "judge_failed"


class ServiceUnavailableError(SteplakeError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"


class StoreError(SteplakeError):
    """The store failed in a way that is not the caller's fault."""

    status = 503
    type = "store_error"
    code = "store_error"


class StoreUnavailableError(StoreError):
    """The database cannot be reached (restarting, network down); retry shortly (503)."""

    code = "store_unavailable"


class StorageFullError(StoreError):
    """The database's disk (or quota) is full: writes fail until space returns (507)."""

    status = 507
    code = "insufficient_storage"


class CaptureFailedError(ServiceUnavailableError):
    """``--capture-sync``: the call was answered by the upstream but could not be recorded (503)."""

    code = "capture_failed"


class PolicyReloadError(UpstreamError):
    """``POST /policy`` with ``weights_path``: an upstream failed to load the weights; nothing was recorded."""

    code = "policy_reload_failed"


class FilterError(ValidationError):
    """A trajectory filter names an unknown field or gives a value of the wrong type (422); exports answer
    it as their own ``ExportError`` (400)."""

    code = "invalid_filter"


class ConfigError(SteplakeError):
    """Bad settings or CLI usage; the CLI exits with status 2."""

    status = 400
    type = "invalid_request_error"
    code = "config_error"


class RenderError(SteplakeError):
    """A renderer or bridge failed at run time (``--prompt-mode tokens``): the gateway answers that call in
    chat mode instead, flagged and counted; never sent to an agent."""

    code = "render_failed"


class TrainingError(SteplakeError):
    """``steplake train``: a checkpoint that cannot be written or resumed, or a publish the server refused
    (the old weights keep serving); the CLI prints it and exits 2."""

    code = "training_failed"


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    421: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    507: "api_error",
    529: "overloaded_error",
}

__all__ = [
    "SteplakeError", "BadRequestError", "ValidationError", "PayloadTooLargeError", "RequestTimeoutError",
    "UnsupportedMediaTypeError", "MisdirectedRequestError", "AuthenticationError",
    "PermissionDeniedError", "NotFoundError", "ResponseNotFoundError", "ConflictError", "RateLimitError", "UpstreamError",
    "UpstreamTimeoutError", "UpstreamFailure", "JudgeError", "ServiceUnavailableError",
    "StoreError", "StoreUnavailableError", "StorageFullError", "CaptureFailedError", "PolicyReloadError",
    "FilterError", "ConfigError", "ANTHROPIC_TYPES",
]
