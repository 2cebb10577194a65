"""Anthropic Messages ⇄ OpenAI chat translation (the upstream is always asked in chat form, which is
where exact token ids are available; see UPSTREAMS.md).

Request blocks (shapes already checked by ``validate.check_anthropic``; nothing is dropped silently):

- ``text`` → text; a user message made only of text blocks stays a string, any other block (image,
  document, tool-result image) makes it an array of chat content parts in block order.
- ``image`` (``base64`` or ``url`` source) → ``{"type": "image_url", "image_url": {"url": ...}}``, a
  ``data:<media_type>;base64,<data>`` URL for base64 data.
- ``document`` with a ``text`` or ``content`` source → text parts (title and context first, separated by
  a blank line). PDF sources are refused by validation: chat upstreams take no PDFs.
- ``tool_result`` → a ``tool`` message with its text (``Error: `` first when ``is_error``); its images go,
  in order, into the user message that follows the tool messages (chat tool messages carry text only).
- assistant ``thinking`` → ``reasoning_content`` (the vLLM / SGLang field chat templates read);
  ``redacted_thinking`` is opaque (encrypted by Anthropic) and is skipped.
- ``thinking`` request param → ``chat_template_kwargs.enable_thinking`` (Qwen3-style templates);
  ``adaptive`` leaves the template default; ``budget_tokens`` has no chat equivalent.

Answers: ``reasoning_content`` (or ``reasoning``) becomes a leading ``thinking`` block (empty signature);
streamed reasoning deltas become a thinking block with ``thinking_delta`` events.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

from ..types import Json

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _text_part(text: str) -> Json:
    return {"type": "text", "text": text}


def image_part(block: Json) -> Json:
    """An Anthropic ``image`` block → a chat ``image_url`` part."""
    src = block["source"]
    url = src["url"] if src.get("type") == "url" else f"data:{src['media_type']};base64,{src['data']}"
    return {"type": "image_url", "image_url": {"url": url}}


def document_parts(block: Json) -> list[Json]:
    """A ``text`` / ``content`` document → text (and image) parts, title and context first."""
    src = block["source"]
    head = [s for s in (block.get("title"), block.get("context")) if isinstance(s, str) and s]
    body = src.get("data") if src.get("type") == "text" else src.get("content")
    if isinstance(body, str):
        return [_text_part("\n\n".join([*head, body]))]
    return ([_text_part("\n\n".join(head))] if head else []) + content_parts(body or [])


def content_parts(blocks: list[Json]) -> list[Json]:
    """``text`` / ``image`` / ``document`` blocks → chat content parts, in order."""
    out: list[Json] = []
    for b in blocks:
        kind = b.get("type")
        if kind == "text":
            out.append(_text_part(str(b.get("text", ""))))
        elif kind == "image":
            out.append(image_part(b))
        elif kind == "document":
            out += document_parts(b)
    return out


def messages_to_chat(body: Json) -> list[Json]:
    """Anthropic ``system`` + ``messages`` → chat messages (tool_result blocks become tool messages)."""
    out: list[Json] = []
    sysp = body.get("system")
    if sysp:
        out.append({"role": "system", "content": _block_text(sysp)})
    for m in body["messages"]:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
        elif m["role"] == "assistant":
            out.append(assistant_blocks_to_chat(content))
        else:
            out += _user_blocks_to_chat(content)
    return out


def assistant_blocks_to_chat(blocks: list[Json]) -> Json:
    """Assistant blocks → one chat message; ``thinking`` → ``reasoning_content``, ``redacted_thinking``
    skipped (opaque)."""
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    reasoning = "".join(str(b.get("thinking") or "") for b in blocks if b.get("type") == "thinking")
    calls = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False)}}
             for b in blocks if b.get("type") == "tool_use"]
    msg: Json = {"role": "assistant", "content": text if text or not calls else None}
    if reasoning:
        msg["reasoning_content"] = reasoning
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_result(block: Json) -> tuple[Json, list[Json]]:
    """A ``tool_result`` → (the tool message with its text, its image parts)."""
    c = block.get("content")
    parts = content_parts(c) if isinstance(c, list) else [_text_part(c)] if isinstance(c, str) else []
    text = "".join(p["text"] for p in parts if p["type"] == "text")
    if block.get("is_error"):
        text = "Error: " + text
    msg = {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
    return msg, [p for p in parts if p["type"] != "text"]


def _user_blocks_to_chat(blocks: list[Json]) -> list[Json]:
    """Tool messages first (chat wants them right after the assistant's calls), then one user message with
    everything else in block order: a string when it is text blocks only, else an array of parts."""
    out: list[Json] = []
    parts: list[Json] = []
    plain = True
    for b in blocks:
        if b.get("type") == "tool_result":
            msg, images = _tool_result(b)
            out.append(msg)
            parts += images
            plain = plain and not images
        else:
            parts += content_parts([b])
            plain = plain and b.get("type") == "text"
    if parts or not out:
        content: Any = "".join(p["text"] for p in parts) if plain else parts
        out.append({"role": "user", "content": content})
    return out


def tools_to_chat(tools: list[Json] | None) -> list[Json] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                              "parameters": t.get("input_schema") or {"type": "object"}}}
            for t in tools]


def tool_choice_to_chat(tc: Any) -> Any:
    if not isinstance(tc, dict):
        return None
    kind = tc.get("type")
    if kind == "any":
        return "required"
    if kind == "tool" and tc.get("name"):
        return {"type": "function", "function": {"name": tc["name"]}}
    if kind == "none":
        return "none"
    return "auto" if kind == "auto" else None


def request_to_chat(body: Json) -> Json:
    chat: Json = {"model": body["model"], "messages": messages_to_chat(body), "max_tokens": body["max_tokens"]}
    for k in ("temperature", "top_p", "top_k"):
        if body.get(k) is not None:
            chat[k] = body[k]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    tools = tools_to_chat(body.get("tools"))
    if tools:
        chat["tools"] = tools
        tc = tool_choice_to_chat(body.get("tool_choice"))
        if tc is not None:
            chat["tool_choice"] = tc
    enable = thinking_switch(body.get("thinking"))
    if enable is not None:
        chat["chat_template_kwargs"] = {"enable_thinking": enable}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def thinking_switch(thinking: Any) -> bool | None:
    """The ``thinking`` param → ``enable_thinking`` for the chat template (None: template default)."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        return True
    return False if kind == "disabled" else None


def for_upstream_kind(chat: Json, kind: str) -> Json:
    """A generic ``openai+`` upstream is asked nothing vendor-specific: no ``chat_template_kwargs`` and no
    ``reasoning_content`` in history (strict OpenAI-compatible servers refuse unknown fields)."""
    if kind != "openai":
        return chat
    out = {k: v for k, v in chat.items() if k != "chat_template_kwargs"}
    out["messages"] = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in chat["messages"]]
    return out


def _input(args: Any) -> Json:
    if isinstance(args, dict):
        return args
    try:
        v = orjson.loads(args) if isinstance(args, str) and args.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def stop_of(finish_reason: str | None, stop_reason: Any, stops: list[str] | None,
            tool_use: bool = False) -> tuple[str, str | None]:
    """Chat finish_reason → Anthropic (stop_reason, stop_sequence). A forced tool call ends with
    ``stop`` in chat (OpenAI, vLLM) but is ``tool_use`` in Anthropic terms."""
    if tool_use and finish_reason in ("stop", "tool_calls", None):
        return "tool_use", None
    if finish_reason == "stop" and isinstance(stop_reason, str) and stops and stop_reason in stops:
        return "stop_sequence", stop_reason
    return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None


def reasoning_of(part: Json) -> str | None:
    """The reasoning text of a chat message or delta (vLLM / SGLang ``reasoning_content``, newer
    ``reasoning``); the same rule as the step recording in tokens.py."""
    r = part.get("reasoning_content") or part.get("reasoning")
    return r if isinstance(r, str) and r else None


def message_id(chat_id: Any) -> str:
    return "msg_" + (str(chat_id).removeprefix("chatcmpl-") if chat_id else uuid.uuid4().hex)


def answer_to_anthropic(data: Json, body: Json) -> Json:
    """A chat completion (one choice) → an Anthropic Message, vendor top-level fields kept."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[Json] = []
    reasoning = reasoning_of(msg)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        content.append({"type": "tool_use", "id": tc.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                        "name": fn.get("name"), "input": _input(fn.get("arguments"))})
    reason, seq = stop_of(choice.get("finish_reason"), choice.get("stop_reason"), body.get("stop_sequences"),
                          any(b["type"] == "tool_use" for b in content))
    usage = data.get("usage") or {}
    return {"id": message_id(data.get("id")), "type": "message", "role": "assistant",
            "model": data.get("model") or body["model"], "content": content, "stop_reason": reason,
            "stop_sequence": seq, "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                            "output_tokens": usage.get("completion_tokens", 0)}}


def event(name: str, data: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamTranslator:
    """Chat completion chunks → Anthropic stream events, in Anthropic's order."""

    def __init__(self, body: Json) -> None:
        self.body = body
        self.started = False
        self.block: int = -1  # index of the open content block
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # chat tool index → block index
        self.finish: str | None = None
        self.stop_reason: Any = None
        self.output_tokens = 0

    def chunk(self, c: Json) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            pids = c.get("prompt_token_ids")
            out.append(event("message_start", {"type": "message_start", "message": {
                "id": message_id(c.get("id")), "type": "message", "role": "assistant",
                "model": c.get("model") or self.body["model"], "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": len(pids) if isinstance(pids, list) else 0,
                                                 "output_tokens": 0}}}))
            out.append(event("ping", {"type": "ping"}))
        usage = c.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            self.output_tokens = usage["completion_tokens"]
        for ch in c.get("choices") or []:
            if ch.get("index", 0) != 0:
                continue
            out += self._delta(ch.get("delta") or {})
            if ch.get("finish_reason"):
                self.finish, self.stop_reason = ch["finish_reason"], ch.get("stop_reason")
        return out

    def _delta(self, d: Json) -> list[bytes]:
        out: list[bytes] = []
        reasoning = reasoning_of(d)
        if reasoning:
            if self.block_kind != "thinking":
                out += self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                      "delta": {"type": "thinking_delta", "thinking": reasoning}}))
        if d.get("content"):
            if self.block_kind != "text":
                out += self._open({"type": "text", "text": ""}, "text")
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                      "delta": {"type": "text_delta", "text": d["content"]}}))
        for tc in d.get("tool_calls") or []:
            ti = tc.get("index", 0)
            fn = tc.get("function") or {}
            if ti not in self.tool_blocks:
                out += self._open({"type": "tool_use", "id": tc.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                                   "name": fn.get("name"), "input": {}}, "tool")
                self.tool_blocks[ti] = self.block
            if fn.get("arguments"):
                out.append(event("content_block_delta", {
                    "type": "content_block_delta", "index": self.tool_blocks[ti],
                    "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]}}))
        return out

    def _open(self, block: Json, kind: str) -> list[bytes]:
        out = self._close()
        self.block += 1
        self.block_kind = kind
        out.append(event("content_block_start", {"type": "content_block_start", "index": self.block,
                                                 "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self.block_kind is None:
            return []
        self.block_kind = None
        return [event("content_block_stop", {"type": "content_block_stop", "index": self.block})]

    def finish_events(self) -> list[bytes]:
        out = self._close()
        reason, seq = stop_of(self.finish, self.stop_reason, self.body.get("stop_sequences"), bool(self.tool_blocks))
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": reason, "stop_sequence": seq},
                                           "usage": {"output_tokens": self.output_tokens}}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out


__all__ = ["request_to_chat", "messages_to_chat", "assistant_blocks_to_chat", "answer_to_anthropic",
           "StreamTranslator", "event", "stop_of", "content_parts", "image_part", "document_parts",
           "thinking_switch", "for_upstream_kind", "reasoning_of"]
