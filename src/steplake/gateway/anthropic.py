"""Anthropic-compatible ``/v1/messages``: translated to chat for the upstream, answered in Anthropic form.
With ``--prompt-mode tokens|auto`` the translated chat request takes the token path like an OpenAI chat call
(``prompts.py``, ``token_chat.py``), answered through the Anthropic wire (``token_wire.py``)."""

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
from ..upstreams.openai_compat import sse_events
from .anthropic_wire import (
    StreamTranslator,
    answer_to_anthropic,
    assistant_blocks_to_chat,
    event,
    for_upstream_kind,
    request_to_chat,
)
from .attribution import from_request
from .capture import CallContext, sampling_of
from .http import read_json, upstream_error_body
from .openai import SSE_HEADERS, upstream_body
from .policy import GatedStreamingResponse
from .shape import check_answer, stream_chunk
from .token_wire import AnthropicWire
from .tokens import AnswerAcc, ChoiceAcc, Wants
from .validate import check_anthropic

if TYPE_CHECKING:
    from .core import Gateway


def answer_message(ch: ChoiceAcc, body: Json) -> Json:
    """The assistant turn as the agent received it, back in chat form (for the exchange hash)."""
    blocks = answer_to_anthropic({"choices": [{"message": ch.message()}]}, body)["content"]
    return assistant_blocks_to_chat(blocks)


def _upstream_chat(chat: Json, up: Upstream, stream: bool) -> Json:
    return upstream_body(for_upstream_kind(chat, up.effective_kind), up, stream)


class AnthropicHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def messages(self, request: Request) -> Response:
        gw = self.gw
        body = await read_json(request, gw.settings.max_body_bytes)
        check_anthropic(body)
        chat = request_to_chat(body)
        att = await gw.resolve(from_request(request), chat["messages"])
        stream = bool(body.get("stream"))
        sampling = sampling_of(body)
        if chat.get("chat_template_kwargs"):
            sampling["chat_template_kwargs"] = chat["chat_template_kwargs"]
        ctx = CallContext("anthropic.messages", att, chat["messages"], chat.get("tools"), sampling, stream)
        try:
            plan = await gw.prompts.plan(ctx, chat)  # --prompt-mode: the token path (gateway/prompts.py)
        except BaseException:
            gw.index.release(att.claimed_hash)
            raise
        if plan is not None:
            return await gw.token_chat.answer(ctx, chat, plan, Wants.of(chat), AnthropicWire(body, plan.prompt_ids))
        try:
            if stream:
                async def open_stream(up: Upstream) -> aiohttp.ClientResponse:
                    return await gw.client.open_stream(up, "/chat/completions", _upstream_chat(chat, up, True))
                up, resp, ticket = await gw.open_upstream(ctx, att.trajectory_id, open_stream)
                return GatedStreamingResponse(self._relay(ctx, up, resp, body), ticket,
                                              media_type="text/event-stream", headers=SSE_HEADERS)

            async def post(up: Upstream) -> Json:
                return check_answer(await gw.client.post_json(up, "/chat/completions", _upstream_chat(chat, up, False)))
            up, data = await gw.call_upstream(ctx, att.trajectory_id, post)
        except BaseException:
            gw.index.release(att.claimed_hash)
            raise
        ans = AnswerAcc()
        ans.add(data, "message")
        hashes = gw.capturer.record_exchanges(ctx, [answer_message(c, body) for c in ans.ordered()[:1]])
        payload = orjson.dumps(answer_to_anthropic(data, body))
        if gw.settings.capture_sync:
            await gw.capturer.capture(ctx, up, ans, hashes)
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/json",
                        background=BackgroundTask(gw.capturer.capture, ctx, up, ans, hashes))

    async def _relay(self, ctx: CallContext, up: Upstream, resp: aiohttp.ClientResponse,
                     body: Json) -> AsyncIterator[bytes]:
        gw = self.gw
        ans = AnswerAcc()
        tr = StreamTranslator(body)
        done = False
        try:
            async for payload in sse_events(resp):
                chunk = stream_chunk(payload)
                ans.add(chunk, "delta")
                for ev in tr.chunk(chunk):
                    yield ev
            done = True
        except UpstreamFailure as e:
            up.errors += 1
            yield event("error", upstream_error_body("anthropic", e))
        finally:
            gw.end_stream(ctx, resp, done)
        if not done:
            return
        if not tr.started:
            for ev in tr.chunk({}):
                yield ev
        hashes = gw.capturer.record_exchanges(ctx, [answer_message(c, body) for c in ans.ordered()[:1]])
        if gw.settings.capture_sync:
            try:
                await gw.capturer.capture(ctx, up, ans, hashes)
            except CaptureFailedError as e:  # the error event instead of message_delta / message_stop
                yield event("error", e.to_anthropic())
                return
        else:
            gw.spawn(gw.capturer.capture(ctx, up, ans, hashes))
        for ev in tr.finish_events():
            yield ev


__all__ = ["AnthropicHandlers", "answer_message"]
