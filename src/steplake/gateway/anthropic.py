"""Anthropic-compatible ``/v1/messages``: translated to chat for the upstream, answered in Anthropic form.
With ``--prompt-mode tokens|auto`` the translated chat request takes the token path like an OpenAI chat call
(``prompts.py``, ``token_chat.py``); otherwise it takes the chat path of every protocol translated to chat
(``wire_chat.py``). Either way the answer goes out through the Anthropic wire (``token_wire.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from .anthropic_wire import request_to_chat
from .attribution import from_request
from .capture import CallContext, sampling_of
from .http import read_json
from .token_wire import AnthropicWire
from .tokens import Wants
from .validate import check_anthropic
from .wire_chat import WireChat

if TYPE_CHECKING:
    from .core import Gateway


class AnthropicHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.chat = WireChat(gw)

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
        wire = AnthropicWire(body, plan.prompt_ids if plan is not None else None)
        if plan is not None:
            return await gw.token_chat.answer(ctx, chat, plan, Wants.of(chat), wire)
        return await self.chat.answer(ctx, chat, wire)


__all__ = ["AnthropicHandlers"]
