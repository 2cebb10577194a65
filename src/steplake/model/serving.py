"""Shared pieces of the model server: state, running the engine in a worker thread, wire helpers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import BadRequestError, ServiceUnavailableError
from .decoding import FREE_PLAN, Generation, Segment, TokenPiece
from .engine import LocalModel
from .sampling import SamplingParams
from .scoring import PositionLogprobs

log = logging.getLogger(__name__)

LOGPROB_FLOOR = -9999.0  # JSON has no -inf; vLLM reports this for impossible tokens


@dataclass
class ServerState:
    model: LocalModel
    served_model_name: str
    default_max_tokens: int = 512

    async def ready(self) -> LocalModel:
        """The model, loading it first if needed (in a worker thread)."""
        if not self.model.loaded:
            try:
                await asyncio.to_thread(self.model.load)
            except Exception as exc:
                raise ServiceUnavailableError(f"the model failed to load: {exc}", code="model_load_failed") from exc
        return self.model

    def max_tokens(self, prompt_ids: Sequence[int], requested: int | None) -> int:
        room = self.model.check_prompt(prompt_ids, requested)
        return requested if requested is not None else min(self.default_max_tokens, room)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def now() -> int:
    return int(time.time())


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finite(lp: float) -> float:
    return lp if lp > LOGPROB_FLOOR else LOGPROB_FLOOR


def token_label(model: LocalModel, token_id: int, as_ids: bool) -> str:
    return f"token_id:{token_id}" if as_ids else model.token_text(token_id)


def chat_logprob(model: LocalModel, token_id: int, logprob: float, top: Sequence[tuple[int, float]],
                 as_ids: bool) -> dict[str, Any]:
    """One entry of ``choices[i].logprobs.content`` (OpenAI chat shape)."""
    def entry(tid: int, lp: float) -> dict[str, Any]:
        return {"token": token_label(model, tid, as_ids), "logprob": finite(lp),
                "bytes": list(model.token_bytes(tid))}
    return {**entry(token_id, logprob), "top_logprobs": [entry(t, lp) for t, lp in top]}


def completion_logprobs(model: LocalModel, ids: Sequence[int], lps: Sequence[float],
                        tops: Sequence[Sequence[tuple[int, float]]], as_ids: bool,
                        offset: int = 0) -> dict[str, Any]:
    """Legacy completions ``logprobs`` object: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens = [token_label(model, t, as_ids) for t in ids]
    top_dicts = []
    offsets = []
    for tid, lp, top, label in zip(ids, lps, tops, tokens, strict=True):
        offsets.append(offset)
        offset += len(model.token_text(tid)) if tid not in model.vocabulary.special_ids else 0
        d = {token_label(model, t, as_ids): finite(v) for t, v in top}
        d.setdefault(label, finite(lp))
        top_dicts.append(d)
    return {"tokens": tokens, "token_logprobs": [finite(x) for x in lps], "top_logprobs": top_dicts,
            "text_offset": offsets}


def prompt_logprobs_json(model: LocalModel, positions: Sequence[PositionLogprobs | None]) -> list[Any]:
    """vLLM's wire shape: per position ``null`` or ``{"<id>": {logprob, rank, decoded_token}}``, the
    position's own token first, then the top-k (rank 1..k; the own token keeps its place when among them)."""
    out: list[Any] = []
    for pos in positions:
        if pos is None:
            out.append(None)
            continue
        entries = {pos.token_id: pos.rank, **{t: r for r, (t, _) in enumerate(pos.top, 1)}}
        logprobs = {pos.token_id: pos.logprob, **dict(pos.top)}
        out.append({str(t): {"logprob": finite(logprobs[t]), "rank": rank, "decoded_token": model.token_text(t)}
                    for t, rank in entries.items()})
    return out


async def compute_prompt_logprobs(model: LocalModel, prompt_ids: Sequence[int], top: int | None) -> list[Any] | None:
    """``prompt_logprobs`` of a prompt (one forward pass in a worker thread), or None when not asked for."""
    if top is None:
        return None
    positions = await asyncio.to_thread(model.prompt_logprobs, prompt_ids, top)
    return prompt_logprobs_json(model, positions)


_DONE = object()


async def stream_pieces(model: LocalModel, prompt_ids: Sequence[int], params: SamplingParams,
                        plan: Sequence[Segment] = FREE_PLAN) -> AsyncIterator[TokenPiece]:
    """Run ``model.stream`` in a worker thread; stop it (``abort``) when the consumer goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone
            cancel.set()

    def work() -> None:
        try:
            for n, piece in enumerate(model.stream(prompt_ids, params, plan, cancel), 1):
                put(piece)
                if cancel.is_set():
                    log.debug("generation stopped after %d tokens", n)
                    break
        except BaseException as exc:  # handed to the consumer
            put(exc)
        finally:
            put(_DONE)

    threading.Thread(target=work, name="steplake-model-generate", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        log.debug("stream consumer done at %.3f", time.monotonic())
        cancel.set()


async def generate(model: LocalModel, prompt_ids: Sequence[int], params: SamplingParams,
                   plan: Sequence[Segment] = FREE_PLAN) -> Generation:
    gen = Generation(prompt_ids=list(prompt_ids))
    async for piece in stream_pieces(model, prompt_ids, params, plan):
        gen.add(piece)
    return gen


async def generate_many(model: LocalModel, prompt_ids: Sequence[int], params: Sequence[SamplingParams],
                        plan: Sequence[Segment] = FREE_PLAN) -> list[Generation]:
    """One generation per ``params``, all in flight together (the scheduler batches them); the first
    failure cancels the others."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(generate(model, prompt_ids, p, plan)) for p in params]
    return [t.result() for t in tasks]


def stream_error(exc: Exception) -> bytes:
    """An error after the stream started: one ``data: {"error": ...}`` event (vLLM does the same)."""
    if isinstance(exc, BadRequestError | ServiceUnavailableError):
        return sse(exc.to_openai())
    return sse({"error": {"message": f"{type(exc).__name__}: {exc}", "type": "internal_error",
                          "code": "internal_error"}})


__all__ = ["ServerState", "new_id", "now", "sse", "SSE_DONE", "usage", "chat_logprob", "completion_logprobs",
           "stream_pieces", "generate", "generate_many", "stream_error", "LOGPROB_FLOOR", "prompt_logprobs_json",
           "compute_prompt_logprobs"]
