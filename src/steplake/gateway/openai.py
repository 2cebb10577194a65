"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ..errors import CaptureFailedError
from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure
from ..upstreams.openai_compat import ask_for_ids_chat, ask_for_ids_completion, sse_events
from .attribution import from_request
from .capture import CallContext, sampling_of
from .http import read_json, upstream_error_body
from .policy import GatedStreamingResponse
from .shape import check_answer, stream_chunk
from .tokens import AnswerAcc, Wants, strip_answer
from .validate import check_chat, check_choice_ids, check_completion

if TYPE_CHECKING:
    from .core import Gateway

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def upstream_body(body: Json, up: Upstream, stream: bool, completions: bool = False) -> Json:
    b = dict(body)
    if not b.get("model"):
        b["model"] = up.model_id or "default"
    if completions:
        ask_for_ids_completion(b, up.effective_kind, stream)
    else:
        ask_for_ids_chat(b, up.effective_kind, stream)
    return b


def stream_error_event(e: UpstreamFailure) -> bytes:
    return b"data: " + orjson.dumps(upstream_error_body("openai", e)) + b"\n\n"


class OpenAIHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def chat(self, request: Request) -> Response:
        gw = self.gw
        body = await read_json(request, gw.settings.max_body_bytes)
        check_chat(body)
        if body.get("prompt_logprobs") is not None:
            return await self._scoring(body, "/chat/completions", completions=False)
        att = await gw.resolve(from_request(request), body["messages"])
        stream = bool(body.get("stream"))
        ctx = CallContext("openai.chat", att, body["messages"], body.get("tools"), sampling_of(body), stream)
        try:
            plan = await gw.prompts.plan(ctx, body)  # --prompt-mode: the token path (gateway/prompts.py)
        except BaseException:
            gw.index.release(att.claimed_hash)
            raise
        if plan is not None:
            return await gw.token_chat.answer(ctx, body, plan, Wants.of(body))
        return await self._call(ctx, body, "/chat/completions", Wants.of(body), completions=False)

    async def completions(self, request: Request) -> Response:
        gw = self.gw
        body = await read_json(request, gw.settings.max_body_bytes)
        check_completion(body)
        if body.get("prompt_logprobs") is not None:
            return await self._scoring(body, "/completions", completions=True)
        att = await gw.resolve(from_request(request), None)
        stream = bool(body.get("stream"))
        ctx = CallContext("openai.completions", att, None, None, sampling_of(body), stream,
                          prompt_text=body["prompt"])
        return await self._call(ctx, body, "/completions", Wants.of(body, completions=True), completions=True)

    async def _scoring(self, body: Json, path: str, completions: bool) -> Response:
        """A ``prompt_logprobs`` request scores a sequence (a trainer recomputing logprobs), it is no agent
        action: forwarded as it is and answered, with no trajectory opened and no step recorded."""
        gw = self.gw
        gw.scoring_calls += 1

        async def post(up: Upstream) -> Json:
            return await gw.client.post_json(up, path, body)
        _, data = await gw.call_upstream(None, None, post)
        return Response(orjson.dumps(data), media_type="application/json")

    async def models(self, request: Request) -> Response:
        gw = self.gw
        await gw.upstreams.wait_ready()
        for up in gw.upstreams.candidates(None):
            try:
                status, raw = await gw.client.get(up.v1 + "/models", timeout=10.0, up=up)
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if status == 200:
                return Response(raw, media_type="application/json")
        raise UpstreamFailure(502, "no upstream answered /v1/models")

    async def _call(self, ctx: CallContext, body: Json, path: str, wants: Wants, completions: bool) -> Response:
        gw = self.gw
        kind = "text" if completions else "message"
        try:
            check_choice_ids(ctx.att.trajectory_id, body.get("n"))
            if ctx.stream:
                async def open_stream(up: Upstream) -> aiohttp.ClientResponse:
                    return await gw.client.open_stream(up, path, upstream_body(body, up, True, completions))
                up, resp, ticket = await gw.open_upstream(ctx, ctx.att.trajectory_id, open_stream)
                gen = self._relay(ctx, up, resp, wants, "text" if completions else "delta", body)
                return GatedStreamingResponse(gen, ticket, media_type="text/event-stream", headers=SSE_HEADERS)

            async def post(up: Upstream) -> Json:
                return check_answer(await gw.client.post_json(up, path, upstream_body(body, up, False, completions)))
            up, data = await gw.call_upstream(ctx, ctx.att.trajectory_id, post)
        except BaseException:
            gw.index.release(ctx.att.claimed_hash)
            raise
        ans = AnswerAcc()
        ans.add(data, kind)
        _prompt_from_request(ans, body)
        hashes = gw.capturer.record_exchanges(ctx, [c.message() for c in ans.ordered()])
        payload = orjson.dumps(strip_answer(data, wants, False))
        if gw.settings.capture_sync:
            await gw.capturer.capture(ctx, up, ans, hashes)
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/json",
                        background=BackgroundTask(gw.capturer.capture, ctx, up, ans, hashes))

    async def _relay(self, ctx: CallContext, up: Upstream, resp: aiohttp.ClientResponse, wants: Wants,
                     kind: str, body: Json) -> AsyncIterator[bytes]:
        """Pass the upstream's SSE chunks on (minus gateway-requested fields); capture when complete."""
        gw = self.gw
        ans = AnswerAcc()
        done = False
        held: list[bytes] | None = [] if gw.settings.capture_sync else None  # final chunks wait for the commit
        try:
            async for payload in sse_events(resp):
                chunk = stream_chunk(payload)
                ans.add(chunk, kind)
                out = strip_answer(chunk, wants, True)
                if out is not None:
                    data = b"data: " + orjson.dumps(out) + b"\n\n"
                    if held is not None and (held or _finishes(chunk)):
                        held.append(data)
                    else:
                        yield data
            done = True
        except UpstreamFailure as e:
            up.errors += 1
            yield stream_error_event(e)
        finally:
            gw.end_stream(ctx, resp, done)
        if not done:
            return
        _prompt_from_request(ans, body)
        hashes = gw.capturer.record_exchanges(ctx, [c.message() for c in ans.ordered()])
        if held is not None:
            try:
                await gw.capturer.capture(ctx, up, ans, hashes)
            except CaptureFailedError as e:  # the error event instead of the final chunks
                yield b"data: " + orjson.dumps(e.to_openai()) + b"\n\n"
                return
            for data in held:
                yield data
        else:
            gw.spawn(gw.capturer.capture(ctx, up, ans, hashes))
        yield b"data: [DONE]\n\n"


def _finishes(chunk: Json) -> bool:
    """The chunk ends a choice (it carries a ``finish_reason``)."""
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices)


def _prompt_from_request(ans: AnswerAcc, body: Json) -> None:
    """A token-id prompt is exactly what the model was given, even when the upstream does not echo it."""
    p = body.get("prompt")
    if ans.prompt_ids is None and isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        ans.prompt_ids = p


__all__ = ["OpenAIHandlers", "upstream_body", "stream_error_event"]
