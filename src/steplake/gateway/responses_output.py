"""The Responses answer object, built the same way for ``POST /v1/responses`` (whole or at the end of a
stream) and for ``GET /v1/responses/{id}`` (from the stored step): item ids derive from the step id."""

from __future__ import annotations

import secrets
from typing import Any

from ..types import Json

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
ECHO = ("instructions", "metadata", "tool_choice", "tools", "temperature", "top_p", "max_output_tokens",
        "parallel_tool_calls", "previous_response_id", "text")


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def echo_of(body: Json) -> Json:
    """The request fields a Response object repeats, with OpenAI's defaults."""
    return {"instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
            "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
            "previous_response_id": body.get("previous_response_id"),
            "text": body.get("text") or {"format": {"type": "text"}}}


def usage_of(chat_usage: Any) -> Json | None:
    if not isinstance(chat_usage, dict):
        return None
    pt, ct = int(chat_usage.get("prompt_tokens") or 0), int(chat_usage.get("completion_tokens") or 0)
    return {"input_tokens": pt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": ct, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": pt + ct}


def text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(hexid: str, text: str, status: str = "completed") -> Json:
    return {"id": "rs_" + hexid, "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if status == "completed" else [], "status": status}


def message_item(hexid: str, text: str | None, status: str = "completed") -> Json:
    return {"id": "msg_" + hexid, "type": "message", "role": "assistant", "status": status,
            "content": [text_part(text)] if text is not None else []}


def call_item(hexid: str, k: int, call: Json, status: str = "completed") -> Json:
    fn = call.get("function") or {}
    return {"id": f"fc_{hexid}_{k}", "type": "function_call", "call_id": call.get("id") or "",
            "name": fn.get("name") or "", "arguments": fn.get("arguments") or "", "status": status}


def output_items(hexid: str, content: str | None, reasoning: str | None, calls: list[Json] | None,
                 finish: str | None) -> list[Json]:
    """``reasoning`` (when given), ``message`` (when there is text, or nothing else), one ``function_call``
    per tool call, in that order."""
    done = "incomplete" if finish in INCOMPLETE else "completed"
    out: list[Json] = []
    if reasoning:
        out.append(reasoning_item(hexid, reasoning))
    if content or not calls:
        out.append(message_item(hexid, content or "", "completed" if calls else done))
    for k, c in enumerate(calls or []):
        out.append(call_item(hexid, k, c, done))
    return out


def response_object(rid: str, created_at: int, model: str | None, echo: Json, output: list[Json],
                    finish: str | None, usage: Json | None, status: str | None = None) -> Json:
    reason = INCOMPLETE.get(finish or "")
    status = status or ("incomplete" if reason else "completed")
    return {"id": rid, "object": "response", "created_at": created_at, "status": status, "background": False,
            "error": None, "incomplete_details": {"reason": reason} if reason and status == "incomplete" else None,
            "model": model or "", "output": output, "usage": usage, "truncation": "disabled", **echo}


__all__ = ["echo_of", "usage_of", "output_items", "response_object", "message_item", "reasoning_item", "call_item",
           "text_part", "new_call_id", "INCOMPLETE", "ECHO"]
