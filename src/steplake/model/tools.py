"""Tool calls in the model's text: parsing, repair, streaming, and forced calls (``tool_choice``).

The model writes a call as ``<tool_call>{"name": "NAME", "arguments": {...}}</tool_call>`` (see
``chat.py``, which renders tools and earlier calls the same way). ``parse_tool_calls`` turns the text
into OpenAI ``tool_calls``; a body that is not valid JSON is repaired when possible (unclosed strings
and brackets closed, trailing commas dropped, extra text after the object ignored, ``arguments`` given
as a JSON string decoded) and the repair is reported in ``repairs``; an unrecoverable body stays in
``content`` as text and is reported in ``errors``. An unclosed ``<tool_call>`` at the end of the text
(the model ran out of tokens) is parsed the same way.

``forced_tool_plan`` builds the decoding plan for ``tool_choice`` naming a function or ``"required"``:
the prefix ``<tool_call>{"name": "NAME", "arguments": `` is forced (for ``"required"`` the name is
constrained to the declared names), the arguments are decoded under a JSON constraint following the
function's ``parameters`` schema, then ``}</tool_call>`` and the end-of-turn token are forced.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequestError
from .decoding import Forced, JsonValue, OneOf, Segment

OPEN, CLOSE = "<tool_call>", "</tool_call>"
STRING_FORBID = "{}[]<>"


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object as text
    id: str = field(default_factory=new_call_id)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ParsedOutput:
    content: str | None
    tool_calls: list[ToolCall]
    repairs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _close_json(text: str) -> str:
    """Close unterminated strings/brackets and drop a dangling comma or colon at the end."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text + ('\\"' if esc else "") + ('"' if in_str else "")
    out = out.rstrip()
    while out.endswith((",", ":")):
        dangling_key = out.endswith(":")
        out = out[:-1].rstrip()
        if dangling_key and out.endswith('"'):
            start = out.rfind('"', 0, len(out) - 1)
            if start >= 0:
                out = out[:start].rstrip()
    return out + "".join(reversed(stack))


def repair_json(body: str) -> tuple[Any, str | None]:
    """Parse ``body`` as one JSON value, repairing when possible. Returns (value, repair note or None);
    raises ``ValueError`` when nothing can be recovered."""
    body = body.strip()
    try:
        return json.loads(body), None
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    start = body.find("{")
    if start >= 0:
        try:
            value, end = decoder.raw_decode(body, start)
            return value, f"ignored {len(body) - end} trailing character(s)"
        except json.JSONDecodeError:
            pass
        fixed = _close_json(body[start:])
        for candidate in (fixed, fixed.replace(",}", "}").replace(",]", "]")):
            try:
                return json.loads(candidate), "closed an unterminated JSON object"
            except json.JSONDecodeError:
                continue
    raise ValueError(f"not JSON: {body[:80]!r}")


def _to_call(value: Any) -> tuple[ToolCall, str | None]:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        raise ValueError("a tool call needs a string 'name'")
    args = value.get("arguments", value.get("parameters", {}))
    note = None
    if isinstance(args, str):
        args, note = repair_json(args) if args.strip() else ({}, None)
        note = "arguments were a JSON string" + (f" ({note})" if note else "")
    if not isinstance(args, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return ToolCall(value["name"], json.dumps(args, ensure_ascii=False)), note


def _raw_arguments(body: str, args: Any) -> str | None:
    """The arguments object exactly as written in ``body`` (when it parses to ``args``), else None."""
    key = body.find('"arguments"')
    if key < 0:
        return None
    colon = body.find(":", key + len('"arguments"'))
    if colon < 0:
        return None
    start = colon + 1
    while start < len(body) and body[start] in " \t\n\r":
        start += 1
    try:
        value, end = json.JSONDecoder().raw_decode(body, start)
    except json.JSONDecodeError:
        return None
    return body[start:end] if value == args and isinstance(value, dict) else None


def parse_body(body: str) -> tuple[ToolCall, list[str]]:
    """One ``<tool_call>`` body → ToolCall (raises ``ValueError`` when unrecoverable). Arguments written
    as clean JSON keep their exact text, so rendering the call back gives the sampled text."""
    value, note = repair_json(body)
    call, note2 = _to_call(value)
    if note is None and note2 is None and isinstance(value, dict):
        raw = _raw_arguments(body, value.get("arguments"))
        if raw is not None:
            call = dataclasses.replace(call, arguments=raw)
    return call, [n for n in (note, note2) if n]


def find_close(text: str, body_start: int, final: bool = True) -> int:
    """Index of the ``</tool_call>`` closing the call whose body starts at ``body_start``: the first one
    after which the body is complete JSON (a JSON string may contain the tag), else (when ``final``)
    simply the first one; -1 when there is none."""
    first = pos = text.find(CLOSE, body_start)
    while pos >= 0:
        try:
            json.loads(text[body_start:pos])
            return pos
        except json.JSONDecodeError:
            pos = text.find(CLOSE, pos + 1)
    return first if final else -1


def parse_tool_calls(text: str) -> ParsedOutput:
    """Split model text into content and tool calls (see the module docstring)."""
    content: list[str] = []
    calls: list[ToolCall] = []
    out = ParsedOutput(None, calls)
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            content.append(text[pos:])
            break
        content.append(text[pos:start])
        body_start = start + len(OPEN)
        end = find_close(text, body_start)
        body = text[body_start: end if end >= 0 else len(text)]
        pos = end + len(CLOSE) if end >= 0 else len(text)
        try:
            call, notes = parse_body(body)
        except ValueError as exc:
            out.errors.append(f"tool call {len(calls) + len(out.errors)}: {exc}")
            content.append(text[start:pos])
            continue
        calls.append(call)
        out.repairs.extend(f"tool call {len(calls) - 1}: {n}" for n in notes)
    joined = "".join(content).strip()
    out.content = joined or None
    return out


@dataclass
class StreamEvent:
    """``kind`` is ``content`` (``text``) or ``tool_call`` (``call``, ``index``)."""

    kind: str
    text: str = ""
    call: ToolCall | None = None
    index: int = 0


class ToolCallStreamer:
    """Incremental ``parse_tool_calls``: feed text deltas, get content and complete tool calls.

    Text that may be the start of ``<tool_call>`` is held back; a call is emitted once its
    ``</tool_call>`` arrives (or at ``finish``). Whitespace-only content between calls is dropped.
    """

    def __init__(self) -> None:
        self.buf = ""
        self.in_call = False
        self.n_calls = 0
        self.repairs: list[str] = []
        self.errors: list[str] = []

    def feed(self, delta: str) -> list[StreamEvent]:
        self.buf += delta
        events: list[StreamEvent] = []
        while True:
            if self.in_call:
                end = find_close(self.buf, 0, final=False)
                if end < 0:
                    return events
                events += self._call(self.buf[:end])
                self.buf, self.in_call = self.buf[end + len(CLOSE):], False
                continue
            start = self.buf.find(OPEN)
            if start >= 0:
                events += self._content(self.buf[:start])
                self.buf, self.in_call = self.buf[start + len(OPEN):], True
                continue
            hold = next((k for k in range(min(len(OPEN) - 1, len(self.buf)), 0, -1)
                         if self.buf.endswith(OPEN[:k])), 0)
            events += self._content(self.buf[: len(self.buf) - hold])
            self.buf = self.buf[len(self.buf) - hold:]
            return events

    def finish(self) -> list[StreamEvent]:
        rest, self.buf = self.buf, ""
        if not self.in_call:
            return self._content(rest)
        self.in_call = False
        end = find_close(rest, 0)
        if end < 0:
            return self._call(rest)
        return self._call(rest[:end]) + self.feed(rest[end + len(CLOSE):]) + self.finish()

    def _content(self, text: str) -> list[StreamEvent]:
        if not text or (self.n_calls and not text.strip()):
            return []
        return [StreamEvent("content", text=text)]

    def _call(self, body: str) -> list[StreamEvent]:
        try:
            call, notes = parse_body(body)
        except ValueError as exc:
            self.errors.append(str(exc))
            return [StreamEvent("content", text=OPEN + body)]
        self.repairs.extend(notes)
        self.n_calls += 1
        return [StreamEvent("tool_call", call=call, index=self.n_calls - 1)]


def _function_specs(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"] for t in tools}


def _after_name(spec: dict[str, Any], eos: int) -> tuple[Segment, ...]:
    schema = spec.get("parameters") or {"type": "object"}
    return (JsonValue(schema, forbid=(CLOSE,), string_forbid=STRING_FORBID), Forced(text="}" + CLOSE), Forced(ids=(eos,)))


def forced_tool_plan(tools: list[dict[str, Any]], tool_choice: Any, eos: int) -> tuple[Segment, ...] | None:
    """Decoding plan forcing a call (``tools`` as returned by ``chat.normalize_tools``), or None when
    ``tool_choice`` lets the model decide (``None``, ``"auto"``, ``"none"``)."""
    if tool_choice in (None, "auto", "none"):
        return None
    specs = _function_specs(tools)
    if not specs:
        raise BadRequestError("tool_choice needs tools", code="invalid_tool_choice")
    if tool_choice == "required":
        options = {f'{name}"': (Forced(text=', "arguments": '), *_after_name(spec, eos))
                   for name, spec in specs.items()}
        return (Forced(text=OPEN + '{"name": "'), OneOf(options))
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise BadRequestError('tool_choice must be "none", "auto", "required" or '
                              '{"type": "function", "function": {"name": ...}}', code="invalid_tool_choice")
    if name not in specs:
        raise BadRequestError(f"tool_choice names {name!r}, which is not among the tools",
                              code="invalid_tool_choice")
    prefix = OPEN + json.dumps({"name": name})[:-1] + ', "arguments": '
    return (Forced(text=prefix), *_after_name(specs[name], eos))


__all__ = ["ToolCall", "ParsedOutput", "parse_tool_calls", "parse_body", "repair_json", "StreamEvent",
           "ToolCallStreamer", "forced_tool_plan", "new_call_id"]
