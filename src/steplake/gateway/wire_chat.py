"""The chat path of a protocol translated to chat (Anthropic messages, OpenAI Responses): the translated
request goes to the upstream's ``/v1/chat/completions`` (asked for exact ids like any chat call), and the
answer goes back through the protocol's wire (``token_wire.Wire``: the same wires the token path answers
through), whole or as the protocol's stream events. One relay and one capture for every such protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure
from ..upstreams.openai_compat import sse_events
from .anthropic_wire import for_upstream_kind
from .capture import CallContext
from .openai import SSE_HEADERS, upstream_body
from .policy import GatedStreamingResponse
from .shape import check_answer, stream_chunk
from .token_wire import Wire
from .tokens import AnswerAcc

if TYPE_CHECKING:
    from .core import Gateway


def upstream_chat(chat: Json, up: Upstream, stream: bool) -> Json:
    return upstream_body(for_upstream_kind(chat, up.effective_kind), up, stream)


class WireChat:
    """One choice (these protocols have no ``n``)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def answer(self, ctx: CallContext, chat: Json, wire: Wire) -> Response:
        gw = self.gw
        try:
            if ctx.stream:
                async def open_stream(up: Upstream) -> aiohttp.ClientResponse:
                    return await gw.client.open_stream(up, "/chat/completions", upstream_chat(chat, up, True))
                up, resp, ticket = await gw.open_upstream(ctx, ctx.att.trajectory_id, open_stream)
                return GatedStreamingResponse(self._relay(ctx, up, resp, wire), ticket,
                                              media_type="text/event-stream", headers=SSE_HEADERS)

            async def post(up: Upstream) -> Json:
                return check_answer(await gw.client.post_json(up, "/chat/completions", upstream_chat(chat, up, False)))
            up, data = await gw.call_upstream(ctx, ctx.att.trajectory_id, post)
        except BaseException:
            gw.index.release(ctx.att.claimed_hash)
            raise
        ans = AnswerAcc()
        ans.add(data, "message")
        chats = ans.ordered()[:1]
        payload = orjson.dumps(wire.whole(data, chats))  # before the hashes: the wire may fill missing call ids
        hashes = gw.capturer.record_exchanges(ctx, [wire.history_message(c.message()) for c in chats])
        if gw.settings.capture_sync:
            await gw.capturer.capture(ctx, up, ans, hashes)
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/json",
                        background=BackgroundTask(gw.capturer.capture, ctx, up, ans, hashes))

    async def _relay(self, ctx: CallContext, up: Upstream, resp: aiohttp.ClientResponse,
                     wire: Wire) -> AsyncIterator[bytes]:
        """Chat chunks in, the wire's events out; captured when the upstream's stream is whole."""
        gw = self.gw
        ans = AnswerAcc()
        done = False
        try:
            async for payload in sse_events(resp):
                chunk = stream_chunk(payload)
                ans.add(chunk, "delta")
                for ev in wire.chunk(chunk):
                    yield ev
            done = True
        except UpstreamFailure as e:
            up.errors += 1
            yield wire.upstream_error(e)
        finally:
            gw.end_stream(ctx, resp, done)
        if not done:
            return
        chats = ans.ordered()[:1]
        for c in chats:
            wire.finished(c)
        hashes = gw.capturer.record_exchanges(ctx, [wire.history_message(c.message()) for c in chats])
        async for ev in gw.stream_tail(ctx, up, ans, hashes, wire):
            yield ev


__all__ = ["WireChat", "upstream_chat"]
