"""Turning one finished upstream call into Steps (one per choice) and handing them to the pool.

Runs off the agent's critical path: the exchange hashes are recorded before the answer's last byte goes
out (so the agent's next call can join the trajectory), the steps are built and queued afterwards.
A capture problem is logged and counted (``Pool.captures``: one count the pool's and the gateway's stats
share), never raised into the agent's call — except with ``--capture-sync``, whose promise is that an
answered call is stored: there a failed capture raises ``CaptureFailedError`` (503 in the agent's protocol,
or the stream's error event instead of its final events), and the exchange is indexed only once stored, so
the agent's retry continues the same trajectory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureFailedError, SteplakeError
from ..pool.pool import Pool
from ..records import Step, StepResponse, TokenSource
from ..types import Json
from ..upstreams.base import Upstream, server_of
from ..upstreams.tokenizer import FallbackTokenizer
from .attribution import Attribution, ExchangeIndex, exchange_hash, new_group_id, new_hex
from .tokens import AnswerAcc, ChoiceAcc

log = logging.getLogger("steplake.gateway.capture")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "n", "stop",
                 "seed", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
                 "tool_choice", "response_format", "stop_sequences", "parallel_tool_calls")


def sampling_of(body: Json) -> Json:
    return {k: body[k] for k in SAMPLING_KEYS if body.get(k) is not None}


@dataclass
class CallContext:
    protocol: str  # openai.chat | openai.completions | anthropic.messages | whitebox.generate
    att: Attribution
    messages: list[Json] | None
    tools: list[Json] | None
    sampling: Json
    stream: bool
    t0: float = field(default_factory=time.perf_counter)
    prompt_text: Any = None
    answer_messages: list[Json] | None = None  # per choice, chat form, as the agent received it
    trajectory_ids: list[str] = field(default_factory=list)
    group_id: str | None = None
    policy_version: int | None = None  # current when the upstream call started (Gateway's policy gate)
    indexed: bool = False  # the exchange hashes are in the attribution index
    prompt: Json = field(default_factory=dict)  # prompt_mode and why (gateway/prompts.py), into provenance
    warnings: list[str] = field(default_factory=list)  # flagged before the capture (a token path fallback)
    step_ids: list[str] = field(default_factory=list)  # ids chosen before the answer (Responses: resp_ + id)
    provenance: Json = field(default_factory=dict)  # protocol-specific provenance (the Responses request)

    def plan(self, n_choices: int) -> None:
        """Trajectory per choice: choice 0 keeps the call's trajectory, choice i gets ``{tid}-{i}``."""
        tid = self.att.trajectory_id
        self.trajectory_ids = [tid] + [f"{tid}-{i}" for i in range(1, n_choices)]
        self.group_id = self.att.group_id
        if n_choices > 1 and self.group_id is None:
            self.group_id = new_group_id()


@dataclass
class CaptureCounters:
    """Gateway-side counts; failures are counted once, in ``Pool.captures`` (see ``Capturer.stats``)."""

    steps: int = 0
    ids_missing: int = 0
    ids_inconsistent: int = 0

    def as_dict(self) -> Json:
        return dict(self.__dict__)


class Capturer:
    def __init__(self, pool: Pool, index: ExchangeIndex, tokenizer: FallbackTokenizer | None,
                 capture_sync: bool) -> None:
        self.pool = pool
        self.index = index
        self.tokenizer = tokenizer
        self.capture_sync = capture_sync
        self.counters = CaptureCounters()

    def stats(self) -> Json:
        caps = self.pool.captures
        return {**self.counters.as_dict(), "failed": caps.failed, "last_error": caps.last_error}

    def record_exchanges(self, ctx: CallContext, answers: list[Json]) -> list[str | None]:
        """Each choice's exchange hash, indexed under its trajectory before the agent sees the end (with
        ``--capture-sync``: once the capture is stored, by ``capture``)."""
        ctx.answer_messages = answers
        ctx.plan(max(1, len(answers)))
        hashes: list[str | None] = [None if ctx.messages is None else exchange_hash([*ctx.messages, msg])
                                    for msg in answers]
        if not self.capture_sync:
            self._index(ctx, hashes)
        return hashes

    def _index(self, ctx: CallContext, hashes: list[str | None]) -> None:
        ctx.indexed = True
        for i, h in enumerate(hashes):
            if h is not None:
                self.index.record(ctx.trajectory_ids[i], h, ctx.att.claimed_hash if i == 0 else None)

    async def capture(self, ctx: CallContext, up: Upstream, ans: AnswerAcc, hashes: list[str | None],
                      sync: bool | None = None) -> list[str]:
        """Build and queue one step per choice; returns the step ids. ``sync`` (default ``--capture-sync``):
        store and wait for each, and raise ``CaptureFailedError`` when one cannot be stored."""
        ids: list[str] = []
        sync = self.capture_sync if sync is None else sync
        built = False
        try:
            latency = (time.perf_counter() - ctx.t0) * 1000.0
            choices = ans.ordered()
            if len(ctx.trajectory_ids) > 1 or ctx.att.group_size:
                await self._open_group(ctx)
            for i, ch in enumerate(choices[: len(ctx.trajectory_ids)]):
                built = False
                step = await self._build(ctx, up, ans, ch, i, hashes[i] if i < len(hashes) else None, latency)
                built = True
                if sync:
                    await self.pool.capture_sync(step)
                else:
                    self.pool.capture(step)
                self.counters.steps += 1
                ids.append(str(step.step_id))
        except Exception as e:  # counted once (the pool counted a store failure already)
            if not built:
                self.pool.capture_failed(None, e)
            if sync:
                self.index.release(ctx.att.claimed_hash)
                raise CaptureFailedError(f"the answer could not be recorded, so it is not delivered "
                                         f"(--capture-sync): {type(e).__name__}: {_message(e)}") from e
            return ids
        if not ctx.indexed:
            self._index(ctx, hashes)
        return ids

    async def _open_group(self, ctx: CallContext) -> None:
        size = ctx.att.group_size or len(ctx.trajectory_ids)
        for tid in ctx.trajectory_ids:
            try:
                await self.pool.create_trajectory(tid, ctx.group_id, size, ctx.att.channel, ctx.att.metadata)
            except SteplakeError:  # already exists (idempotent or conflict): keep its group
                pass

    async def _build(self, ctx: CallContext, up: Upstream, ans: AnswerAcc, ch: ChoiceAcc, i: int,
                     h: str | None, latency: float) -> Step:
        warnings: list[str] = list(ctx.warnings)
        prompt = ch.prompt_ids if ch.prompt_ids is not None else ans.prompt_ids
        resp = ch.token_ids if ch.token_ids is not None else ch.logprob_ids
        logprobs = ch.logprobs
        if resp is not None and logprobs is not None and (ch.logprobs_broken or len(logprobs) != len(resp)):
            warnings.append(f"logprobs_inconsistent: {ch.logprob_entries} logprob entries for {len(resp)} ids")
            logprobs = None
        single = len(ans.choices) == 1
        if single and ans.usage:
            warnings += _usage_checks(prompt, resp, ans.usage)
        sources = {"prompt_ids": "upstream" if prompt is not None else None,
                   "response_ids": "upstream" if resp is not None else None}
        if prompt is None or resp is None:
            up.ids_missing += 1
            self.counters.ids_missing += 1
            warnings.append("ids_missing: upstream reported no "
                            + " and no ".join(k for k, v in sources.items() if v is None))
            prompt, resp, logprobs, sources = await self._fallback(ctx, ch, prompt, resp, logprobs, sources,
                                                                  warnings)
        if any(w.startswith(("ids_inconsistent", "logprobs_inconsistent")) for w in warnings):
            up.ids_inconsistent += 1
            self.counters.ids_inconsistent += 1
        token_source: TokenSource = ("upstream" if all(v == "upstream" for v in sources.values())
                                     else "tokenizer" if all(sources.values()) else "text")
        return Step(
            step_id=ctx.step_ids[i] if i < len(ctx.step_ids) else "st_" + new_hex(), trajectory_id=ctx.trajectory_ids[i], group_id=ctx.group_id,
            channel=ctx.att.channel, prompt_ids=prompt or [], response_ids=resp or [],
            response_logprobs=logprobs if resp else None, token_source=token_source, messages=ctx.messages,
            tools=ctx.tools, response=StepResponse(**ch.response()), finish_reason=ch.finish_reason, model=ans.model,
            sampling=ctx.sampling, usage=ans.usage if single else None, latency_ms=latency,
            policy_version=self.pool.policy_version if ctx.policy_version is None else ctx.policy_version,
            metadata=ctx.att.metadata,
            provenance=self._provenance(ctx, up, sources, h, warnings, logprobs is not None),
        )

    def _provenance(self, ctx: CallContext, up: Upstream, sources: Json, h: str | None, warnings: list[str],
                    has_logprobs: bool) -> Json:
        card = up.extra.get("model_card") or {}
        tok = self.tokenizer
        uses_tok = "tokenizer" in sources.values()
        prov: Json = {
            "upstream": up.root, "upstream_kind": up.effective_kind, "upstream_server": server_of(up),
            "protocol": ctx.protocol,
            "stream": ctx.stream, "attribution": ctx.att.source, "exchange_hash": h,
            "tokenizer": tok.ident if uses_tok and tok else card.get("tokenizer") or up.model_id,
            "chat_template_hash": (tok.chat_template_hash if uses_tok and tok else card.get("chat_template_hash")),
            "logprobs_mode": (card.get("logprobs_mode") or "upstream") if has_logprobs else None,
            "ids_source": sources, "warnings": warnings,
        }
        prov.update(ctx.prompt)
        prov.update(ctx.provenance)
        if ctx.prompt_text is not None:
            prov["prompt"] = ctx.prompt_text
        return prov

    async def _fallback(self, ctx: CallContext, ch: ChoiceAcc, prompt: list[int] | None, resp: list[int] | None,
                        logprobs: list[float] | None, sources: Json, warnings: list[str]
                        ) -> tuple[list[int] | None, list[int] | None, list[float] | None, Json]:
        tok = self.tokenizer
        if tok is None:
            return prompt, resp, logprobs, sources
        try:
            if prompt is None:
                prompt = await asyncio.to_thread(self._encode_prompt, ctx)
                sources["prompt_ids"] = "tokenizer"
            if resp is None:
                resp = await asyncio.to_thread(tok.encode_response, ch.text, ch.finish_reason)
                sources["response_ids"] = "tokenizer"
                logprobs = None
        except Exception as e:
            warnings.append(f"tokenizer_failed: {type(e).__name__}: {e}")
        return prompt, resp, logprobs, sources

    def _encode_prompt(self, ctx: CallContext) -> list[int]:
        assert self.tokenizer is not None
        if ctx.messages is not None:
            return self.tokenizer.encode_chat(ctx.messages, ctx.tools)
        if isinstance(ctx.prompt_text, str):
            return self.tokenizer.encode_text(ctx.prompt_text)
        raise ValueError("no prompt text to tokenize")


def _message(e: BaseException) -> str:
    return e.message if isinstance(e, SteplakeError) else str(e)


def _usage_checks(prompt: list[int] | None, resp: list[int] | None, usage: Json) -> list[str]:
    out = []
    ct, pt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    if resp is not None and isinstance(ct, int) and ct != len(resp):
        out.append(f"ids_inconsistent: {len(resp)} response ids but usage.completion_tokens = {ct}")
    if prompt is not None and isinstance(pt, int) and pt != len(prompt):
        out.append(f"ids_inconsistent: {len(prompt)} prompt ids but usage.prompt_tokens = {pt}")
    return out


__all__ = ["Capturer", "CallContext", "CaptureCounters", "sampling_of"]
