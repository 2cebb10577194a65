"""The embedded model's OpenAI-compatible server (``steplake model serve``), vLLM-flavoured.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (see ``chat_api`` /
``completions_api``), ``GET /v1/models``, ``POST /tokenize``, ``POST /detokenize`` (vLLM's shapes; see
``tokenize``/``detokenize``), ``GET /health``
(200 once the model is loaded, with the decode scheduler's figures in ``batch``: ``max_batch``,
``active``, ``waiting``, ``largest``, ``steps``; 503 while loading or after a failed load) and ``POST
/update_weights_from_disk {model_path}`` (SGLang-style reload → ``{success, message}``, 400 on failure).

The model starts loading in the background when the app starts; requests that need it wait for it.
Any ``model`` name is accepted in requests; responses carry the served name. Requests without
``max_tokens`` get at most ``default_max_tokens`` (and never more than the context has room for).
Errors are OpenAI-shaped ``{"error": {"message", "type", "code"}}``; bad input is always a 400.
Both completion endpoints take vLLM's ``prompt_logprobs: k`` (0..20) to score the prompt's own tokens
(shape in ``completions_api``): a trainer recomputes logprobs with ``prompt = prompt + response ids``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BadRequestError, SteplakeError
from ..upstreams.tokenizer import utf8_pieces
from .chat_api import chat_completions
from .completions_api import completions
from .engine import DEFAULT_MODEL_NAME, LocalModel
from .protocol import ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest, UpdateWeightsRequest
from .serving import ServerState, now

log = logging.getLogger(__name__)


def _error(status: int, message: str, type_: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON: {err.get('ctx', {}).get('error', 'decode error')}")
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc), "invalid_request_error", "invalid_request")

    @app.exception_handler(SteplakeError)
    async def _steplake(_: Request, exc: SteplakeError) -> JSONResponse:
        status = 400 if exc.status == 422 else exc.status
        return JSONResponse(exc.to_openai(), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind, "http_error")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("model server error")
        return _error(500, f"{type(exc).__name__}: {exc}", "internal_error", "internal_error")


def _load_in_background(model: LocalModel) -> None:
    def work() -> None:
        try:
            model.load()
        except Exception:
            log.exception("loading the model failed")

    threading.Thread(target=work, name="steplake-model-load", daemon=True).start()


def create_model_app(model: LocalModel, served_model_name: str = DEFAULT_MODEL_NAME, *,
                     default_max_tokens: int = 512, load_on_startup: bool = True) -> FastAPI:
    """The FastAPI app serving ``model``; see the module docstring."""
    state = ServerState(model, served_model_name, default_max_tokens)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if load_on_startup and not model.loaded:
            _load_in_background(model)
        yield

    app = FastAPI(title="steplake embedded model", lifespan=lifespan)
    app.state.model_state = state
    install_error_handlers(app)

    @app.post("/v1/chat/completions", response_model=None)
    async def _chat(req: ChatRequest) -> Any:
        return await chat_completions(state, req)

    @app.post("/v1/completions", response_model=None)
    async def _completions(req: CompletionRequest) -> Any:
        return await completions(state, req)

    @app.get("/v1/models")
    async def _models() -> dict[str, Any]:
        card = {"id": served_model_name, "object": "model", "created": now(), "owned_by": "steplake",
                "root": str(model.weights_path or model.path or served_model_name), "parent": None,
                "max_model_len": model.context_length if model.loaded else None}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def _health() -> JSONResponse:
        if model.loaded:
            return JSONResponse({"status": "ok", "model": served_model_name,
                                 "weights_version": model.weights_version, "batch": model.batch_stats()})
        if model.load_error:
            return JSONResponse({"status": "error", "error": model.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.post("/tokenize")
    async def _tokenize(req: TokenizeRequest) -> dict[str, Any]:
        return await tokenize(state, req)

    @app.post("/detokenize")
    async def _detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        return await detokenize(state, req)

    @app.post("/update_weights_from_disk")
    async def _update_weights(req: UpdateWeightsRequest) -> JSONResponse:
        await state.ready()
        try:
            await asyncio.to_thread(model.reload, req.model_path)
        except Exception as exc:
            return JSONResponse({"success": False, "message": f"{type(exc).__name__}: {exc}"}, status_code=400)
        return JSONResponse({"success": True, "message": f"loaded weights from {req.model_path}",
                             "weights_version": model.weights_version})

    return app


async def tokenize(state: ServerState, req: TokenizeRequest) -> dict[str, Any]:
    """vLLM's ``{"prompt"}`` or ``{"messages", add_generation_prompt?, tools?}`` → ``{"tokens", "count",
    "max_model_len"}`` (``token_strs`` too with ``return_token_strs``)."""
    model = await state.ready()
    if (req.prompt is None) == (req.messages is None):
        raise BadRequestError("give exactly one of prompt or messages", code="invalid_request")
    if req.messages is not None:
        ids = model.render_chat(req.messages, req.tools, None, req.add_generation_prompt,
                                req.continue_final_message)
    else:
        ids = model.encode(req.prompt or "")
    out: dict[str, Any] = {"count": len(ids), "max_model_len": model.context_length, "tokens": ids}
    if req.return_token_strs:
        out["token_strs"] = [model.token_text(i) for i in ids]
    return out


async def detokenize(state: ServerState, req: DetokenizeRequest) -> dict[str, Any]:
    """vLLM's ``{"tokens"}`` → ``{"prompt": text}``; with ``return_token_texts`` (a steplake extension, for
    the dashboard's token view) also ``token_texts``: one string per id, decoded incrementally from the
    tokens' bytes (a character split over tokens on the token completing it), concatenating to ``prompt``."""
    model = await state.ready()
    out: dict[str, Any] = {"prompt": model.decode(req.tokens)}  # 400 for an id outside the vocabulary
    if req.return_token_texts:
        out["token_texts"] = utf8_pieces(model.token_bytes(i) for i in req.tokens)
    return out


__all__ = ["create_model_app", "install_error_handlers", "tokenize", "detokenize"]
