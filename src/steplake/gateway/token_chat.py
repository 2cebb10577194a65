"""The token path of a chat call (OpenAI chat, or Anthropic messages translated to chat): the prompt ids go
to the upstream's ``/v1/completions`` (with ``return_token_ids``, logprobs and the chat request's sampling
fields; a forced tool call constrained by the upstream: the embedded model's ``tools`` + ``tool_choice``,
vLLM's ``structured_outputs``), and the agent gets an answer built from the renderer's parse of the
completion, whole or streamed (content deltas as they come, tool calls once parsed, ``finish_reason:
tool_calls``, usage), in its own protocol (``token_wire.py``). Tool-call ids are made here once; the step
records exactly the ids sent and the ids sampled.

A completion that does not parse as the renderer's format (a call cut by ``max_tokens``) is answered as
text with the upstream's finish reason and flagged (``parse:`` in ``provenance.warnings``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from ..render.base import Parsed
from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure
from .capture import CallContext
from .policy import GatedStreamingResponse
from .prompts import TokenPlan
from .shape import check_answer, stream_chunk
from .token_upstreams import completion_events, open_completion_stream, post_completion
from .token_wire import OpenAIWire, Wire
from .tokens import AnswerAcc, ChoiceAcc, Wants
from .validate import check_choice_ids

if TYPE_CHECKING:
    from .core import Gateway

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
COPIED = ("temperature", "top_p", "top_k", "min_p", "seed", "n", "stop", "presence_penalty", "frequency_penalty",
          "repetition_penalty", "logit_bias", "user")
OPEN_CALL = "<tool_call>"


def completion_body(body: Json, plan: TokenPlan, up: Upstream, stream: bool) -> Json:
    """The ``/v1/completions`` request for a chat request on the token path."""
    b: Json = {"model": body.get("model") or up.model_id or "default", "prompt": plan.prompt_ids,
               "return_token_ids": True, "stream": stream}
    for k in COPIED:
        if body.get(k) is not None:
            b[k] = body[k]
    mt = body.get("max_completion_tokens") or body.get("max_tokens")
    if mt is not None:
        b["max_tokens"] = mt
    b["logprobs"] = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    if stream:
        b["stream_options"] = {"include_usage": True}
    if plan.constraint is not None and up.effective_kind == "vllm":
        b["structured_outputs"] = plan.constraint  # a forced call (gateway/forced.py)
    elif body.get("tool_choice") not in (None, "auto", "none") and body.get("tools"):
        b["tools"], b["tool_choice"] = body["tools"], body["tool_choice"]  # steplake upstreams: a forced call
    return b


def new_call_id(prefix: str = "call_") -> str:
    return prefix + secrets.token_hex(12)


def chat_choice(raw: ChoiceAcc, parsed: Parsed, named_tool: bool, call_prefix: str = "call_") -> ChoiceAcc:
    """The answer as the agent gets it, in chat form, with the ids and logprobs of the completion."""
    out = ChoiceAcc(index=raw.index, finish_reason=raw.finish_reason, stop_reason=raw.stop_reason,
                    token_ids=raw.token_ids, prompt_ids=raw.prompt_ids, logprobs=raw.logprobs,
                    logprob_entries=raw.logprob_entries, logprobs_broken=raw.logprobs_broken)
    if parsed.content:
        out.content.append(parsed.content)
    if parsed.reasoning:
        out.reasoning.append(parsed.reasoning)
    for k, c in enumerate(parsed.tool_calls):
        out.tool_calls[k] = {"id": new_call_id(call_prefix), "type": "function",
                             "function": {"name": c.name, "arguments": c.arguments}}
    if parsed.tool_calls and raw.finish_reason == "stop" and not named_tool:
        out.finish_reason = "tool_calls"
    return out


def message_of(c: ChoiceAcc) -> Json:
    m = c.message()
    if c.reasoning:
        m["reasoning_content"] = "".join(c.reasoning)
    return m


def _logprobs(c: ChoiceAcc, wants: Wants) -> Json | None:
    if not wants.logprobs or c.logprobs is None:
        return None
    return {"content": [{"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
                        for t, lp in zip(c.token_ids or [], c.logprobs, strict=False)]}


class TokenChat:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def _parse(self, ctx: CallContext, plan: TokenPlan, raw: ChoiceAcc, wire: Wire) -> ChoiceAcc:
        try:
            parsed = plan.renderer.parse(raw.token_ids or [], raw.text)
        except Exception as e:  # answered as the text it is, flagged
            parsed = Parsed(content=raw.text or None, problems=[f"the parser failed: {type(e).__name__}: {e}"])
        ctx.warnings.extend(f"parse: {p}" for p in parsed.problems)
        return chat_choice(raw, parsed, plan.named_tool, wire.call_prefix)

    def _finish(self, ctx: CallContext, plan: TokenPlan, raw: AnswerAcc, chats: list[ChoiceAcc],
                wire: Wire) -> tuple[AnswerAcc, list[str | None]]:
        ans = AnswerAcc()
        ans.prompt_ids, ans.usage, ans.model, ans.id, ans.created = plan.prompt_ids, raw.usage, raw.model, raw.id, raw.created
        for c in chats:
            c.prompt_ids = plan.prompt_ids  # exactly what was sent
            ans.choices[c.index] = c
        hashes = self.gw.capturer.record_exchanges(ctx, [wire.history_message(message_of(c)) for c in chats])
        self.gw.prompts.remember(ctx, hashes, plan.prompt_ids, [c.token_ids for c in chats])
        return ans, hashes

    async def answer(self, ctx: CallContext, body: Json, plan: TokenPlan, wants: Wants,
                     wire: Wire | None = None) -> Response:
        """``body``: the chat request (an Anthropic request translated to chat, with its ``wire``)."""
        gw = self.gw
        wire = wire or OpenAIWire()
        try:
            check_choice_ids(ctx.att.trajectory_id, body.get("n"))
            if ctx.stream:
                async def open_stream(up: Upstream) -> aiohttp.ClientResponse:
                    return await open_completion_stream(gw.client, up, completion_body(body, plan, up, True))
                up, resp, ticket = await gw.open_upstream(ctx, ctx.att.trajectory_id, open_stream)
                gen = self._relay(ctx, plan, up, resp, wants, wire)
                return GatedStreamingResponse(gen, ticket, media_type="text/event-stream", headers=SSE_HEADERS)

            async def post(up: Upstream) -> Json:
                data = await post_completion(gw.client, up, completion_body(body, plan, up, False))
                return check_answer(data)
            up, data = await gw.call_upstream(ctx, ctx.att.trajectory_id, post)
        except BaseException:
            gw.index.release(ctx.att.claimed_hash)
            raise
        raw = AnswerAcc()
        raw.add(data, "text")
        chats = [self._parse(ctx, plan, c, wire) for c in raw.ordered()]
        ans, hashes = self._finish(ctx, plan, raw, chats, wire)
        out: Json = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion",
                     "created": raw.created or int(time.time()), "model": raw.model,
                     "choices": [{"index": c.index, "message": message_of(c), "logprobs": _logprobs(c, wants),
                                  "finish_reason": c.finish_reason} for c in chats],
                     "usage": raw.usage}
        if wants.token_ids:
            out["prompt_token_ids"] = plan.prompt_ids
            for ch, c in zip(out["choices"], chats, strict=True):
                ch["token_ids"] = c.token_ids
        payload = orjson.dumps(wire.whole(out, chats))
        if gw.settings.capture_sync:
            await gw.capturer.capture(ctx, up, ans, hashes)
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/json",
                        background=BackgroundTask(gw.capturer.capture, ctx, up, ans, hashes))

    async def _relay(self, ctx: CallContext, plan: TokenPlan, up: Upstream, resp: aiohttp.ClientResponse,
                     wants: Wants, wire: Wire) -> AsyncIterator[bytes]:
        """Completion chunks in, chat chunks out (through the wire); captured when complete."""
        gw = self.gw
        raw = AnswerAcc()
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        sent: dict[int, str] = {}
        done = False

        def chunk(index: int, delta: Json, finish: str | None = None, extra: Json | None = None) -> list[bytes]:
            ch: Json = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish, **(extra or {})}
            return wire.chunk({"id": cid, "object": "chat.completion.chunk", "created": created,
                               "model": raw.model, "choices": [ch]})
        chats: list[ChoiceAcc] = []
        try:
            async for payload in completion_events(resp, up, plan.prompt_ids, up.model_id):
                data = stream_chunk(payload)
                raw.add(data, "text")
                for ch in data.get("choices") or []:
                    idx = ch.get("index", 0) if isinstance(ch.get("index", 0), int) else 0
                    if idx not in sent:
                        sent[idx] = ""
                        for b in chunk(idx, {"role": "assistant", "content": ""}):
                            yield b
                    acc = raw.choice(idx)
                    safe = _safe_content(acc.text)
                    if len(safe) > len(sent[idx]) and safe.startswith(sent[idx]):
                        for b in chunk(idx, {"content": safe[len(sent[idx]):]}):
                            yield b
                        sent[idx] = safe
                    if ch.get("finish_reason"):
                        c = self._parse(ctx, plan, acc, wire)
                        chats.append(c)
                        for out in self._tail(c, sent[idx], wants, plan):
                            for b in chunk(idx, *out):
                                yield b
                        wire.finished(c)
            done = True
        except UpstreamFailure as e:
            up.errors += 1
            yield wire.upstream_error(e)
        finally:
            gw.end_stream(ctx, resp, done)
        if not done:
            return
        chats.sort(key=lambda c: c.index)
        ans, hashes = self._finish(ctx, plan, raw, chats, wire)
        if wants.usage_in_stream and raw.usage is not None:
            for b in wire.chunk({"id": cid, "object": "chat.completion.chunk", "created": created,
                                 "model": raw.model, "choices": [], "usage": raw.usage}):
                yield b
        async for ev in gw.stream_tail(ctx, up, ans, hashes, wire):
            yield ev

    def _tail(self, c: ChoiceAcc, sent: str, wants: Wants, plan: TokenPlan) -> list[tuple[Json, str | None, Json]]:
        """The rest of a choice once it finished: content not sent yet, tool calls, the finish."""
        out: list[tuple[Json, str | None, Json]] = []
        if c.reasoning:  # never streamed as content: _safe_content holds everything back while it may be open
            out.append(({"reasoning_content": "".join(c.reasoning)}, None, {}))
        text = c.text
        if text.startswith(sent) and len(text) > len(sent):
            out.append(({"content": text[len(sent):]}, None, {}))
        for k in sorted(c.tool_calls):
            tc = c.tool_calls[k]
            out.append(({"tool_calls": [{"index": k, "id": tc["id"], "type": "function",
                                         "function": {"name": tc["function"]["name"], "arguments": ""}}]}, None, {}))
            out.append(({"tool_calls": [{"index": k, "function": {"arguments": tc["function"]["arguments"]}}]},
                        None, {}))
        extra: Json = {}
        if wants.token_ids:
            extra = {"token_ids": c.token_ids, "prompt_token_ids": plan.prompt_ids}
        if wants.logprobs:
            extra["logprobs"] = _logprobs(c, wants)
        out.append(({}, c.finish_reason, extra))
        return out


def _safe_content(text: str) -> str:
    """The part of a streamed completion's text that is content for sure: before a tool call (or the start
    of one) and without trailing whitespace (it may stand before a call); nothing while reasoning may be open."""
    if text.lstrip().startswith("<think>") or "<think>".startswith(text.lstrip()) and text.strip():
        return ""
    cut = text.find(OPEN_CALL)
    if cut < 0:
        cut = next((len(text) - k for k in range(min(len(OPEN_CALL) - 1, len(text)), 0, -1)
                    if text.endswith(OPEN_CALL[:k])), len(text))
    return text[:cut].rstrip()


__all__ = ["TokenChat", "completion_body", "chat_choice"]
