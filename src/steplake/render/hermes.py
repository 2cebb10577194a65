"""Reading a completion in the hermes tool-call format: ``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`` (SmolLM2 as the embedded model and many ChatML models write calls so), with an optional
leading ``<think>...</think>`` as reasoning.

A call whose body is no JSON object with a string ``name`` (a call cut by ``max_tokens``) stays in the
content as the text it is and is named in ``problems``. Arguments written as clean JSON keep their exact
text, so rendering the call back gives the sampled text.
"""

from __future__ import annotations

import json
from typing import Any

from .base import Parsed, ParsedCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _close_at(text: str, start: int) -> int:
    """The ``</tool_call>`` after which the body is complete JSON (a JSON string may hold the tag), else
    the first one; -1 when there is none."""
    first = pos = text.find(CLOSE, start)
    while pos >= 0:
        try:
            json.loads(text[start:pos])
            return pos
        except ValueError:
            pos = text.find(CLOSE, pos + 1)
    return first


def _raw_arguments(body: str, args: Any) -> str | None:
    key = body.find('"arguments"')
    colon = body.find(":", key + len('"arguments"')) if key >= 0 else -1
    if colon < 0:
        return None
    start = colon + 1
    while start < len(body) and body[start] in " \t\r\n":
        start += 1
    try:
        value, end = json.JSONDecoder().raw_decode(body, start)
    except ValueError:
        return None
    return body[start:end] if value == args else None


def parse_call(body: str) -> ParsedCall:
    """One call body → ParsedCall; ``ValueError`` when it is not a call."""
    value = json.loads(body)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        raise ValueError("a tool call needs a JSON object with a string 'name'")
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise ValueError("tool call arguments must be a JSON object")
    raw = _raw_arguments(body, args)
    return ParsedCall(value["name"], raw if raw is not None else json.dumps(args, ensure_ascii=False))


def split_reasoning(text: str) -> tuple[str | None, str]:
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, text
    end = stripped.find(THINK_CLOSE)
    if end < 0:
        return stripped[len(THINK_OPEN):], ""
    return stripped[len(THINK_OPEN):end].strip(), stripped[end + len(THINK_CLOSE):]


def parse_hermes(text: str) -> Parsed:
    """Content, reasoning and tool calls of a completion's text (see the module docstring)."""
    reasoning, text = split_reasoning(text)
    out = Parsed(content=None, reasoning=reasoning)
    content: list[str] = []
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        body_start = start + len(OPEN)
        end = _close_at(text, body_start)
        pos = end + len(CLOSE) if end >= 0 else len(text)
        try:
            out.tool_calls.append(parse_call(text[body_start: end if end >= 0 else len(text)]))
        except ValueError as e:
            n = len(out.tool_calls) + len(out.problems)
            out.problems.append(f"tool call {n} did not parse ({'unclosed' if end < 0 else e}); kept as text")
            content.append(text[start:pos])
    joined = "".join(content)
    if out.tool_calls:
        joined = joined.strip()
    out.content = joined or None
    return out


__all__ = ["parse_hermes", "parse_call", "split_reasoning", "OPEN", "CLOSE"]
