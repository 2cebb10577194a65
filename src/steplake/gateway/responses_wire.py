"""OpenAI Responses ⇄ OpenAI chat translation (the upstream is asked in chat form, where exact ids are).

Request (``POST /v1/responses``):

- ``input``: a string (one user message) or items. ``message`` items (``type`` may be left out) with
  ``input_text`` / ``output_text`` / ``refusal`` parts (text) and ``input_image`` parts (an ``image_url``
  chat part; a ``file_id`` is refused); ``developer`` reads as ``system``. The assistant's items that follow
  each other — ``reasoning`` (→ ``reasoning_content``), an assistant ``message``, ``function_call``
  (→ ``tool_calls``, ``call_id`` as the call's id) — make one assistant message, as they came from one
  answer. ``function_call_output`` → a ``tool`` message. Other item types are refused (400, named).
- ``instructions`` → a leading system message (not carried over by ``previous_response_id``, as OpenAI).
- ``tools``: ``function`` tools only (any other type → 400 naming it); ``tool_choice`` ``auto`` /
  ``none`` / ``required`` / ``{"type": "function", "name"}``; ``max_output_tokens`` → ``max_tokens``;
  ``temperature``, ``top_p``, ``parallel_tool_calls``; ``text.format`` ``json_schema`` / ``json_object``
  → ``response_format``.
- ``metadata``, ``store``, ``previous_response_id`` are the gateway's; every other field is accepted and
  listed in the step's ``provenance.responses.unused`` (``include``, ``truncation``, ``reasoning``, ...).
  ``background``, ``conversation`` and ``prompt`` would change what the call means: refused.

Answer: ``output`` items (``reasoning`` when the upstream gave reasoning, ``message`` with one
``output_text``, ``function_call`` per tool call), ``usage``, ``status`` (``incomplete`` with
``incomplete_details.reason`` ``max_output_tokens`` when the answer was cut by the token limit). Item ids
derive from the step id, so ``GET /v1/responses/{id}`` answers the same object.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequestError
from ..types import Json
from .validate import check_metadata

HANDLED = {"model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p",
           "parallel_tool_calls", "metadata", "previous_response_id", "store", "stream", "text"}
REFUSED = ("background", "conversation", "prompt")


def bad(msg: str, param: str | None = None) -> BadRequestError:
    return BadRequestError(msg, code="invalid_value" if param else "bad_request",
                           details={"param": param} if param else None)


def _text_of(content: Any, where: str) -> str:
    """The text of ``function_call_output.output`` (a string or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise bad(f"{where} must be a string or an array of parts", "input")


def _part(p: Any, where: str) -> Json:
    if not isinstance(p, dict):
        raise bad(f"{where} must be an object", "input")
    kind = p.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(p.get("text"), str):
            raise bad(f"{where}.text must be a string", "input")
        return {"type": "text", "text": p["text"]}
    if kind == "refusal":
        return {"type": "text", "text": str(p.get("refusal") or "")}
    if kind == "input_image":
        url = p.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad(f"{where}: an input_image needs an image_url (file_id images are not supported)", "input")
        img: Json = {"url": url}
        if p.get("detail") in ("low", "high"):
            img["detail"] = p["detail"]
        return {"type": "image_url", "image_url": img}
    raise bad(f"{where}: content part type {kind!r} is not supported (input_text, input_image, output_text)",
              "input")


def _content(content: Any, where: str) -> Any:
    """Message content → chat content: a string when it is text only, else chat parts in order."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or an array of parts", "input")
    parts = [_part(p, f"{where}.content[{k}]") for k, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


class _Builder:
    """Input items → chat messages; the assistant's consecutive items become one assistant message."""

    def __init__(self) -> None:
        self.out: list[Json] = []
        self.turn: Json | None = None  # the open assistant message

    def _assistant(self, fresh: bool) -> Json:
        if self.turn is None or fresh:
            self.turn = {"role": "assistant", "content": None}
            self.out.append(self.turn)
        return self.turn

    def _answered(self) -> bool:
        """The open assistant message already has text or calls: a reasoning or message item starts a new one."""
        return self.turn is not None and bool(self.turn.get("content") or self.turn.get("tool_calls"))

    def add(self, item: Any, k: int) -> None:
        where = f"input[{k}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            name, args, cid = item.get("name"), item.get("arguments"), item.get("call_id")
            if not isinstance(name, str) or not isinstance(args, str) or not isinstance(cid, str):
                raise bad(f"{where}: a function_call needs call_id, name and arguments (strings)", "input")
            turn = self._assistant(False)
            turn.setdefault("tool_calls", []).append(
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise bad(f"{where}: a function_call_output needs a call_id (string)", "input")
            self.turn = None
            self.out.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _text_of(item.get("output"), f"{where}.output")})
        elif kind == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            if not isinstance(parts, list):
                raise bad(f"{where}: a reasoning item's content and summary must be arrays of parts", "input")
            texts = [str(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
            turn = self._assistant(self._answered())
            if texts:
                turn["reasoning_content"] = (turn.get("reasoning_content") or "") + "".join(texts)
        else:
            raise bad(f"{where}: input item type {kind!r} is not supported (message, function_call, "
                      "function_call_output, reasoning)", "input")

    def _message(self, item: Json, where: str) -> None:
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise bad(f"{where}.role must be user, system, developer or assistant, got {role!r}", "input")
        content = _content(item.get("content"), where)
        if role != "assistant":
            self.turn = None
            self.out.append({"role": "system" if role == "developer" else role, "content": content})
            return
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        turn = self._assistant(self._answered())
        turn["content"] = text


def input_to_messages(inp: Any) -> list[Json]:
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    if not isinstance(inp, list):
        raise bad("'input' must be a string or an array of items", "input")
    b = _Builder()
    for k, item in enumerate(inp):
        b.add(item, k)
    return b.out


def tools_to_chat(tools: Any) -> list[Json] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad("'tools' must be an array", "tools")
    other = sorted({str(t.get("type")) for t in tools if not isinstance(t, dict) or t.get("type") != "function"}
                   if all(isinstance(t, dict) for t in tools) else {"(not an object)"})
    if other:
        raise bad(f"only function tools are supported through the gateway; refused tool type(s): {', '.join(other)}",
                  "tools")
    out = []
    for k, t in enumerate(tools):
        if not isinstance(t.get("name"), str):
            raise bad(f"tools[{k}].name must be a string", "tools")
        if t.get("parameters") is not None and not isinstance(t["parameters"], dict):
            raise bad(f"tools[{k}].parameters must be a JSON schema object", "tools")
        fn: Json = {"name": t["name"], "parameters": t.get("parameters") or {"type": "object", "properties": {}}}
        if t.get("description") is not None:
            fn["description"] = t["description"]
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out or None


def tool_choice_to_chat(tc: Any) -> Any:
    if tc is None or tc in ("auto", "none", "required"):
        return tc
    if isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("name"), str):
        return {"type": "function", "function": {"name": tc["name"]}}
    kind = tc.get("type") if isinstance(tc, dict) else tc
    raise bad(f"tool_choice {kind!r} is not supported (auto, none, required, or a function by name)", "tool_choice")


def response_format_of(text: Any) -> Json | None:
    """``text.format`` → chat ``response_format`` (None: plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad("'text' must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        js: Json = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        for k in ("strict", "description"):
            if fmt.get(k) is not None:
                js[k] = fmt[k]
        return {"type": "json_schema", "json_schema": js}
    raise bad("text.format must be {'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', "
              "'name', 'schema'}", "text")


def check_request(body: Json) -> None:
    refused = [k for k in REFUSED if body.get(k) not in (None, False)]
    if refused:
        raise bad(f"not supported through the gateway: {', '.join(refused)}", refused[0])
    if "input" not in body and not body.get("previous_response_id"):
        raise bad("'input' is required", "input")
    for k in ("store", "parallel_tool_calls", "stream"):
        if body.get(k) is not None and not isinstance(body[k], bool):
            raise bad(f"'{k}' must be a boolean", k)
    mt = body.get("max_output_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
        raise bad("'max_output_tokens' must be an integer of at least 1", "max_output_tokens")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise bad("'instructions' must be a string", "instructions")
    prev = body.get("previous_response_id")
    if prev is not None and not isinstance(prev, str):
        raise bad("'previous_response_id' must be a string", "previous_response_id")
    text = body.get("text")
    if any("\x00" in k for k in [*body, *(text if isinstance(text, dict) else [])]):
        raise bad("field names must not contain a NUL character (\\u0000)")
    if body.get("metadata") is not None:
        check_metadata(body["metadata"], "'metadata'")


def request_to_chat(body: Json, history: list[Json]) -> Json:
    """The chat request: instructions, then ``history`` (the previous response's conversation), then input."""
    msgs: list[Json] = []
    if body.get("instructions"):
        msgs.append({"role": "system", "content": body["instructions"]})
    msgs += history
    msgs += input_to_messages(body.get("input", []))
    chat: Json = {"model": body.get("model"), "messages": msgs}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            chat[k] = body[k]
    tools = tools_to_chat(body.get("tools"))
    tc = tool_choice_to_chat(body.get("tool_choice"))
    if tools:
        chat["tools"] = tools
        if tc is not None:
            chat["tool_choice"] = tc
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    rf = response_format_of(body.get("text"))
    if rf is not None:
        chat["response_format"] = rf
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def unused_fields(body: Json) -> list[str]:
    """Fields accepted but not acted on (recorded in the step's provenance, never dropped silently)."""
    text = body.get("text")
    extra = [f"text.{k}" for k in text if k != "format"] if isinstance(text, dict) else []
    return sorted([k for k in body if k not in HANDLED] + extra)


__all__ = ["request_to_chat", "input_to_messages", "tools_to_chat", "tool_choice_to_chat", "response_format_of",
           "check_request", "unused_fields", "bad"]
