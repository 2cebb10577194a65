"""Reading answers: the assistant message, token ids and logprobs of each choice (whole or streamed), and
stripping what the gateway asked for but the agent did not."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..records import INT32_MAX, INT32_MIN
from ..types import Json


def _ints(v: Any) -> list[int] | None:
    """Token ids as reported, or None (not reported) unless every one is an int32, as a Step stores them."""
    if isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and (
            not v or (min(v) >= INT32_MIN and max(v) <= INT32_MAX)):
        return v
    return None


@dataclass
class ChoiceAcc:
    """One choice of an answer, built from a whole answer or from streamed deltas."""

    index: int = 0
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, Json] = field(default_factory=dict)
    finish_reason: str | None = None
    stop_reason: Any = None
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None
    logprobs: list[float] | None = None
    logprob_ids: list[int] | None = None  # llama.cpp puts ids in logprob entries
    logprob_entries: int = 0
    logprobs_broken: bool = False

    # --- chat --------------------------------------------------------------------------------------------
    def add_message(self, choice: Json) -> None:
        msg = choice.get("message") or {}
        self._add_part(msg, choice)
        for i, tc in enumerate(msg.get("tool_calls") or []):
            if isinstance(tc, dict):
                self.tool_calls[i] = {"id": tc.get("id"), "type": tc.get("type", "function"),
                                      "function": dict(tc.get("function") or {})}

    def add_delta(self, choice: Json) -> None:
        delta = choice.get("delta") or {}
        self._add_part(delta, choice)
        for tc in delta.get("tool_calls") or []:
            if not isinstance(tc, dict):
                continue
            idx = tc.get("index", len(self.tool_calls))
            cur = self.tool_calls.setdefault(idx, {"id": None, "type": "function",
                                                   "function": {"name": None, "arguments": ""}})
            if tc.get("id"):
                cur["id"] = tc["id"]
            fn = tc.get("function") or {}
            if fn.get("name"):
                cur["function"]["name"] = fn["name"]
            if fn.get("arguments"):
                cur["function"]["arguments"] = (cur["function"].get("arguments") or "") + fn["arguments"]

    def _add_part(self, part: Json, choice: Json) -> None:
        if isinstance(part.get("content"), str):
            self.content.append(part["content"])
        r = part.get("reasoning_content") or part.get("reasoning")
        if isinstance(r, str):
            self.reasoning.append(r)
        self._common(choice)
        lp = choice.get("logprobs")
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):
            for e in lp["content"]:
                self._add_logprob(e.get("logprob") if isinstance(e, dict) else None,
                                  e.get("id") if isinstance(e, dict) else None)

    # --- completions ---------------------------------------------------------------------------------------
    def add_text_choice(self, choice: Json) -> None:
        if isinstance(choice.get("text"), str):
            self.content.append(choice["text"])
        self._common(choice)
        lp = choice.get("logprobs")
        if isinstance(lp, dict) and isinstance(lp.get("token_logprobs"), list):
            for v in lp["token_logprobs"]:
                self._add_logprob(v, None)

    def _common(self, choice: Json) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if choice.get("stop_reason") is not None:
            self.stop_reason = choice["stop_reason"]
        ids = _ints(choice.get("token_ids"))
        if ids is not None:
            self.token_ids = (self.token_ids or []) + ids
        pids = _ints(choice.get("prompt_token_ids"))
        if pids is not None and self.prompt_ids is None:
            self.prompt_ids = pids

    def _add_logprob(self, value: Any, tid: Any) -> None:
        self.logprob_entries += 1
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            self.logprobs_broken = True
            return
        self.logprobs = (self.logprobs or []) + [float(value)]
        if isinstance(tid, int) and not isinstance(tid, bool):
            self.logprob_ids = (self.logprob_ids or []) + [tid]

    # --- results -------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self.content)

    def calls(self) -> list[Json] | None:
        return [self.tool_calls[k] for k in sorted(self.tool_calls)] or None

    def message(self) -> Json:
        """The assistant message as the agent received it (chat form)."""
        m: Json = {"role": "assistant", "content": self.text if self.content or not self.tool_calls else None}
        calls = self.calls()
        if calls:
            m["tool_calls"] = calls
        return m

    def response(self) -> Json:
        return {"content": self.text if self.content else None, "tool_calls": self.calls(),
                "reasoning": "".join(self.reasoning) if self.reasoning else None}


class AnswerAcc:
    """All choices of one answer plus the top-level fields (id, model, usage, prompt ids)."""

    def __init__(self) -> None:
        self.choices: dict[int, ChoiceAcc] = {}
        self.prompt_ids: list[int] | None = None
        self.usage: Json | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.created: Any = None

    def choice(self, index: int) -> ChoiceAcc:
        c = self.choices.get(index)
        if c is None:
            c = self.choices[index] = ChoiceAcc(index=index)
        return c

    def add(self, data: Json, kind: str) -> None:
        """Add a whole answer or one streamed chunk; ``kind`` is ``message`` / ``delta`` / ``text``."""
        if self.id is None:
            self.id, self.model, self.created = data.get("id"), data.get("model"), data.get("created")
        pids = _ints(data.get("prompt_token_ids"))
        if pids is not None and self.prompt_ids is None:
            self.prompt_ids = pids
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        for ch in data.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index", 0)
            acc = self.choice(idx if isinstance(idx, int) else 0)
            if kind == "message":
                acc.add_message(ch)
            elif kind == "delta":
                acc.add_delta(ch)
            else:
                acc.add_text_choice(ch)

    def ordered(self) -> list[ChoiceAcc]:
        return [self.choices[k] for k in sorted(self.choices)]


@dataclass
class Wants:
    """What the agent itself asked for; anything else the gateway added is stripped from the answer."""

    token_ids: bool = False
    logprobs: bool = False
    usage_in_stream: bool = False

    @classmethod
    def of(cls, body: Json, completions: bool = False) -> Wants:
        lp = body.get("logprobs")
        so = body.get("stream_options")
        return cls(token_ids=bool(body.get("return_token_ids")),
                   logprobs=(lp is not None and lp is not False) if completions else lp is True,
                   usage_in_stream=isinstance(so, dict) and bool(so.get("include_usage")))


def strip_answer(data: Json, wants: Wants, stream: bool) -> Json | None:
    """Remove gateway-requested fields in place; None when a streamed chunk should not be sent at all."""
    if not wants.token_ids:
        data.pop("prompt_token_ids", None)
    choices = data.get("choices")
    if isinstance(choices, list):
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            if not wants.token_ids:
                ch.pop("token_ids", None)
                ch.pop("prompt_token_ids", None)
            if not wants.logprobs and "logprobs" in ch:
                ch["logprobs"] = None
    if stream and not wants.usage_in_stream:
        if not choices and data.get("usage") is not None:
            return None
        data.pop("usage", None)
    return data


__all__ = ["ChoiceAcc", "AnswerAcc", "Wants", "strip_answer"]
