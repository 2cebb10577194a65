"""OpenAI Responses: ``POST /v1/responses`` and ``GET /v1/responses/{id}`` (also under ``/t/{trajectory_id}``).

A call is translated to chat (``responses_wire.py``) and takes the chat path (``wire_chat.py``) or, with
``--prompt-mode tokens|auto``, the token path (``token_chat.py``), answered through the Responses wire
(``responses_stream.py``); one step per call, captured with exact ids like every other protocol.

The response id is ``resp_`` + the step id, chosen before the upstream call and resolved through the pool,
so it survives restarts and works on every server sharing the pool. ``previous_response_id`` continues
that step's conversation (its messages without its ``instructions``, plus its answer) and joins its
trajectory as the next step. ``store: false``: the step is captured all the same, but ``GET`` answers 404
and the id cannot be continued. The step's ``provenance.responses`` holds the response id, ``store``,
the echoed request fields and the accepted-but-unused fields (``unused``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFoundError, ResponseNotFoundError, SteplakeError
from ..records import ID_RE
from ..types import Json
from ..upstreams.base import UpstreamFailure
from .attribution import from_request, new_hex
from .capture import CallContext, sampling_of
from .core import Handler
from .http import json_response, read_json, upstream_error_body
from .responses_output import echo_of, output_items, response_object, usage_of
from .responses_stream import ResponsesWire
from .responses_wire import check_request, request_to_chat, unused_fields
from .tokens import Wants
from .validate import check_chat
from .wire_chat import WireChat

if TYPE_CHECKING:
    from .core import Gateway

PROTOCOL = "openai.responses"
RECENT = 10_000  # ids answered by this server whose capture may still be on its way to the pool
CAPTURE_WAIT_S = 5.0


def error_response(body: Json, status: int) -> Response:
    """OpenAI's Responses error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    err = dict(body.get("error") or {})
    details = err.pop("details", None)
    err.setdefault("param", details.get("param") if isinstance(details, dict) else None)
    if isinstance(details, dict) and set(details) - {"param"}:
        err["details"] = details
    return json_response({"error": err}, status)


def responses_endpoint(fn: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except UpstreamFailure as e:  # a SteplakeError too: first, so the upstream's own body passes on
            return error_response(upstream_error_body("openai", e), e.status)
        except SteplakeError as e:
            return error_response(e.to_openai(), e.status)
    endpoint.__name__ = fn.__name__
    return endpoint


def conversation_of(step: Json) -> list[Json]:
    """A stored response's conversation in chat form: its messages (without its instructions) and answer."""
    msgs = list(step.get("messages") or [])
    if ((step.get("provenance") or {}).get("responses") or {}).get("instructions") and msgs:
        msgs = msgs[1:]
    resp = step.get("response") or {}
    answer: Json = {"role": "assistant", "content": resp.get("content")}
    if resp.get("reasoning"):
        answer["reasoning_content"] = resp["reasoning"]
    if resp.get("tool_calls"):
        answer["tool_calls"] = resp["tool_calls"]
    return [*msgs, answer]


def response_of_step(step: Json) -> Json:
    """The Response object of a stored step, as it was answered."""
    info = step["provenance"]["responses"]
    resp = step.get("response") or {}
    sid = str(step["step_id"])
    finish = step.get("finish_reason")
    items = output_items(sid.removeprefix("st_"), resp.get("content"), resp.get("reasoning"),
                         resp.get("tool_calls"), finish)
    return response_object(info["id"], info["created_at"], step.get("model") or info["echo"].get("model"),
                           {k: v for k, v in info["echo"].items() if k != "model"}, items, finish,
                           usage_of(step.get("usage")))


class ResponsesHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.chat = WireChat(gw)
        self.recent: OrderedDict[str, None] = OrderedDict()

    async def create(self, request: Request) -> Response:
        gw = self.gw
        body = await read_json(request, gw.settings.max_body_bytes)
        check_request(body)
        prev = await self.find(body["previous_response_id"], "previous_response_id") \
            if body.get("previous_response_id") else None
        chat = request_to_chat(body, conversation_of(prev) if prev is not None else [])
        check_chat(chat)
        att = from_request(request)
        if prev is not None:  # the continuation is the next step of that response's trajectory
            att.trajectory_id, att.source = prev["trajectory_id"], "previous_response"
            att.group_id = att.group_id or prev.get("group_id")
            att.channel = att.channel or prev.get("channel")
        att = await gw.resolve(att, chat["messages"])
        ctx = CallContext(PROTOCOL, att, chat["messages"], chat.get("tools"), sampling_of(chat), bool(body.get("stream")))
        step_id = "st_" + new_hex()
        ctx.step_ids = [step_id]
        rid, created, echo = "resp_" + step_id, int(time.time()), echo_of(body)
        ctx.provenance = {"responses": {
            "id": rid, "created_at": created, "store": body.get("store") is not False,
            "instructions": bool(body.get("instructions")), "unused": unused_fields(body),
            "echo": {**echo, "model": body.get("model")}}}
        self._remember(step_id)
        wire = ResponsesWire(rid, step_id.removeprefix("st_"), created, body.get("model"), echo)
        try:
            plan = await gw.prompts.plan(ctx, chat)  # --prompt-mode: the token path (gateway/prompts.py)
        except BaseException:
            gw.index.release(att.claimed_hash)
            raise
        if plan is not None:
            return await gw.token_chat.answer(ctx, chat, plan, Wants.of(chat), wire)
        return await self.chat.answer(ctx, chat, wire)

    async def retrieve(self, request: Request) -> Response:
        step = await self.find(request.path_params["response_id"], None)
        return json_response(response_of_step(step))

    def _remember(self, step_id: str) -> None:
        self.recent[step_id] = None
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    async def find(self, rid: str, param: str | None) -> Json:
        """The stored step of a retrievable response id, else 404 (unknown, not a Responses step, or
        ``store: false``). An id this server answered a moment ago waits for its capture to be stored."""
        what = "Previous response" if param else "Response"
        missing = ResponseNotFoundError(f"{what} with id {rid!r} not found.",
                                        code="previous_response_not_found" if param else None,
                                        details={"param": param} if param else None)
        sid = rid.removeprefix("resp_")
        if not rid.startswith("resp_") or not ID_RE.match(sid):
            raise missing
        deadline = time.monotonic() + CAPTURE_WAIT_S
        while True:
            try:
                step = await self.gw.pool.get_step(sid)
                break
            except NotFoundError:
                if sid not in self.recent or time.monotonic() > deadline:
                    raise missing from None
                await asyncio.sleep(0.02)
        info = (step.get("provenance") or {}).get("responses")
        if (step.get("provenance") or {}).get("protocol") != PROTOCOL or not isinstance(info, dict) \
                or not info.get("store", True):
            raise missing
        return step


__all__ = ["ResponsesHandlers", "responses_endpoint", "response_of_step", "conversation_of"]
