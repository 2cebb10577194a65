"""Prompt modes (``--prompt-mode chat|tokens|auto``): whether a chat call (OpenAI chat, or Anthropic messages
translated to chat) takes the token path, and the prompt ids it sends there.

``chat`` forwards the messages and the upstream renders them (as before). ``tokens`` takes the token path for
every call it can; ``auto`` only where the upstream's kind is known (declared or detected) to take token
prompts. Token prompts go to ``vllm`` and ``steplake`` upstreams (``/v1/completions`` with ``prompt: [ids]``).

The prompt: when the request's history equals the previous step's messages + its answer (the continuation
rule; the previous step comes from a small in-process cache, else from the store through the Pool), the
previous step's prompt ids + its sampled ids + the renderer's bridge for the new messages; otherwise the
renderer's full render (an agent that edited its history gets ``first``/``fork`` as in chat mode, never a
splice). Every step records ``provenance.prompt_mode`` (``tokens`` / ``chat``), ``prompt_mode_reason`` when
it is not ``tokens``, and on the token path ``prompt_build`` (``bridge`` / ``render``) and ``renderer``.
A renderer or bridge failure answers that call in chat mode, flagged (``token_path_failed`` in
``provenance.warnings``) and counted in the gateway's stats; messages the renderer cannot take are a 400.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import BadRequestError
from ..render.base import Renderer
from ..render.resolve import Resolved, resolve
from ..types import Json
from ..upstreams.base import Upstream
from .attribution import exchange_hash
from .capture import CallContext
from .forced import forced_call
from .token_upstreams import NATIVE_KINDS

if TYPE_CHECKING:
    from .core import Gateway

log = logging.getLogger("steplake.gateway.prompts")
TOKEN_KINDS = ("vllm", "steplake", *NATIVE_KINDS)  # native: gateway/token_upstreams.py
CACHE_SIZE = 4096
# chat fields the token path cannot honour yet: such calls stay in chat mode (with the reason)
CHAT_ONLY = ("response_format", "continue_final_message", "add_generation_prompt", "chat_template",
             "chat_template_kwargs", "prompt_logprobs", "guided_json", "structured_outputs")


@dataclass
class Previous:
    """What the bridge needs of a trajectory's last step."""

    exchange: str  # hash of its messages + the answer the agent got
    n_messages: int
    prompt_ids: list[int]
    response_ids: list[int]
    tools: bytes


@dataclass
class TokenPlan:
    renderer: Renderer
    prompt_ids: list[int]
    build: str  # bridge | render
    named_tool: bool
    constraint: Json | None = None  # vLLM's structured_outputs forcing a tool call (gateway/forced.py)


def _tools_key(tools: Any) -> bytes:
    return orjson.dumps(tools or [], option=orjson.OPT_SORT_KEYS)


def _answer_message(step: Json) -> Json:
    resp = step.get("response") or {}
    msg: Json = {"role": "assistant", "content": resp.get("content")}
    if resp.get("tool_calls"):
        msg["tool_calls"] = resp["tool_calls"]
    return msg


class PromptModes:
    """The gateway's prompt mode decisions, renderers and continuation cache."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.mode = gw.settings.prompt_mode
        self._resolved: dict[str, Resolved] = {}
        self._lock = asyncio.Lock()
        self.cache: OrderedDict[str, Previous] = OrderedDict()
        self.steps = {"chat": 0, "tokens": 0}
        self.builds = {"bridge": 0, "render": 0}
        self.fallbacks = 0
        self.last_fallback: str | None = None

    def stats(self) -> Json:
        return {"mode": self.mode, "steps": dict(self.steps), "builds": dict(self.builds),
                "fallbacks": self.fallbacks, "last_fallback": self.last_fallback,
                "renderers": {k or "-": (r.renderer.name if r.renderer else None) for k, r in self._resolved.items()}}

    # the decision ------------------------------------------------------------------------------------
    def chat(self, ctx: CallContext, reason: str) -> None:
        ctx.prompt = {"prompt_mode": "chat", "prompt_mode_reason": reason}
        self.steps["chat"] += 1

    def fallback(self, ctx: CallContext, e: BaseException) -> None:
        """A renderer or bridge failure: this call goes on in chat mode, flagged and counted."""
        what = f"{type(e).__name__}: {getattr(e, 'message', None) or e}"
        self.fallbacks += 1
        self.last_fallback = what
        ctx.warnings.append(f"token_path_failed: {what}")
        log.warning("token path failed, the call goes on in chat mode: %s", what)
        self.steps["tokens"] -= 1
        self.chat(ctx, f"the renderer failed: {what}")

    def upstream(self) -> tuple[Upstream | None, str | None]:
        """The upstream a token prompt would go to, or why none would take it."""
        ups = self.gw.upstreams.candidates(None) or self.gw.upstreams.upstreams
        bad = [u for u in ups if u.effective_kind not in TOKEN_KINDS or (self.mode == "auto" and u.kind is None)]
        if bad:
            u = bad[0]
            kind = u.effective_kind if u.kind is not None else "not yet detected"
            return None, f"upstream {u.root} (kind {kind}) takes no token prompts here"
        return (ups[0] if ups else None), None

    async def plan(self, ctx: CallContext, body: Json) -> TokenPlan | None:
        """The token prompt for an OpenAI chat call, or None: chat mode (``ctx.prompt`` says why)."""
        if self.mode == "chat":
            self.chat(ctx, "--prompt-mode chat")
            return None
        fields = [k for k in CHAT_ONLY if body.get(k) is not None]
        msgs = body["messages"]
        if fields:
            self.chat(ctx, f"the request uses {', '.join(fields)}, which the token path does not take")
            return None
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            self.chat(ctx, "the last message is an assistant turn to continue")
            return None
        up, why = self.upstream()
        if up is None:
            self.chat(ctx, why or "no upstream")
            return None
        resolved = await self.renderer(up)
        if resolved.renderer is None:
            self.chat(ctx, resolved.reason or "no renderer")
            return None
        constraint: Json | None = None
        if isinstance(body.get("tool_choice"), dict) or body.get("tool_choice") == "required":
            if up.effective_kind == "vllm":
                constraint, why = forced_call(resolved.renderer, body.get("tools"), body["tool_choice"])
                if constraint is None:
                    self.chat(ctx, f"a forced tool call cannot be constrained on the token path: {why}")
                    return None
            elif up.effective_kind != "steplake":
                self.chat(ctx, f"a forced tool call on the token path of a {up.effective_kind} upstream is not "
                               "built yet")
                return None
        self.steps["tokens"] += 1
        try:
            ids, build = await self._prompt(ctx, resolved.renderer, msgs, body.get("tools"))
        except BadRequestError:
            self.steps["tokens"] -= 1
            raise
        except Exception as e:
            self.fallback(ctx, e)
            return None
        self.builds[build] += 1
        ctx.prompt = {"prompt_mode": "tokens", "prompt_build": build, "renderer": resolved.renderer.name}
        return TokenPlan(resolved.renderer, ids, build, isinstance(body.get("tool_choice"), dict), constraint)

    async def renderer(self, up: Upstream) -> Resolved:
        key = up.model_id or ""
        got = self._resolved.get(key)
        if got is not None:
            return got
        async with self._lock:
            got = self._resolved.get(key)
            if got is None:
                s = self.gw.settings
                got = await asyncio.to_thread(resolve, s.renderer, self.gw.tokenizer, up.model_id,
                                              up.effective_kind, s.model_gguf)
                if got.renderer is None:
                    log.warning("no renderer for the token path (%s): calls stay in chat mode", got.reason)
                self._resolved[key] = got
        return got

    async def warm(self) -> None:
        """Resolve the renderer once the upstreams are up (a tokenizer load takes seconds)."""
        if self.mode == "chat":
            return
        await self.gw.upstreams.wait_ready()
        up, _ = self.upstream()
        if up is not None:
            await self.renderer(up)

    # the prompt --------------------------------------------------------------------------------------
    async def _prompt(self, ctx: CallContext, r: Renderer, msgs: list[Json], tools: Any) -> tuple[list[int], str]:
        prev = await self.previous(ctx.att.trajectory_id) if ctx.att.source != "auto-new" else None
        if prev is not None:
            k = prev.n_messages + 1
            new = msgs[k:]
            if (new and len(msgs) > k and prev.tools == _tools_key(tools)
                    and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in new)
                    and exchange_hash(msgs[:k]) == prev.exchange):
                bridge = r.bridge(prev.prompt_ids, prev.response_ids, new, tools)
                return [*prev.prompt_ids, *prev.response_ids, *bridge], "bridge"
        return await asyncio.to_thread(r.render, msgs, tools), "render"

    async def previous(self, trajectory_id: str) -> Previous | None:
        got = self.cache.get(trajectory_id)
        if got is not None:
            self.cache.move_to_end(trajectory_id)
            return got
        try:
            page = await self.gw.pool.list_steps({"trajectory_id": trajectory_id, "order": "desc"}, None, 1, True)
        except Exception as e:  # the store is away: a full render
            log.warning("cannot read the last step of %s: %s: %s", trajectory_id, type(e).__name__, e)
            return None
        if not page.items:
            return None
        step = page.items[0]
        if step.get("token_source") != "upstream" or not step.get("prompt_ids") or step.get("messages") is None:
            return None
        msgs = list(step["messages"])
        return Previous(exchange_hash([*msgs, _answer_message(step)]), len(msgs), list(step["prompt_ids"]),
                        list(step.get("response_ids") or []), _tools_key(step.get("tools")))

    def remember(self, ctx: CallContext, hashes: list[str | None], prompt_ids: list[int],
                 responses: list[list[int] | None]) -> None:
        """Each choice's step as the next call's previous step (before the agent sees the answer)."""
        if ctx.messages is None:
            return
        for tid, h, resp in zip(ctx.trajectory_ids, hashes, responses, strict=False):
            if h is None or resp is None:
                continue
            self.cache[tid] = Previous(h, len(ctx.messages), prompt_ids, resp, _tools_key(ctx.tools))
            self.cache.move_to_end(tid)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)


__all__ = ["PromptModes", "TokenPlan", "Previous", "TOKEN_KINDS"]
