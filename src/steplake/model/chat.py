"""OpenAI chat messages → the messages SmolLM2's chat template understands.

The template knows only ``role`` and string ``content``; it has no tool support. The convention used
here (same as ``tools.py`` parses):

- Tools are described in the system message (the first message if it is ``system``/``developer``,
  else a new one with SmolLM2's default system text), after a ``# Tools`` heading, one JSON object per
  tool inside ``<tools></tools>``, followed by the calling instruction.
- An assistant tool call is written ``<tool_call>{"name": "NAME", "arguments": {...}}</tool_call>``
  (JSON with ``", "`` / ``": "`` separators), several calls separated by newlines, after the message's
  text content (separated by a newline).
- Tool results (role ``tool``, or legacy ``function``) become one ``user`` turn per run of consecutive
  results: ``<tool_response>\\nRESULT\\n</tool_response>`` blocks separated by newlines, in call order.
- ``developer`` is rendered as ``system``. Content may be a string, null, or a list of ``text`` parts
  (joined without separator); other part types are refused with a 400 (the model is text-only: an
  ``image_url`` part says that image inputs need a multimodal upstream).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import BadRequestError

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
IMAGE_PARTS = ("image_url", "input_image", "image")

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>'
)


def _bad(message: str, code: str = "invalid_messages") -> BadRequestError:
    return BadRequestError(message, code=code)


def normalize_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Validate OpenAI tool specs; returns ``[{"type": "function", "function": {...}}]``."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}] must be an object", "invalid_tools")
        fn = tool.get("function") if "function" in tool else tool
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise _bad(f"tools[{i}] must be a function tool", "invalid_tools")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{i}].function.name must be a non-empty string", "invalid_tools")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"tools[{i}].function.parameters must be an object", "invalid_tools")
        spec: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str):
            spec["description"] = fn["description"]
        spec["parameters"] = params if params is not None else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": spec})
    return out


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in IMAGE_PARTS:
                raise _bad(f"{where}.content[{j}]: the embedded model is text-only; image inputs need a "
                           "multimodal upstream", "unsupported_content")
            if not isinstance(part, dict) or kind not in ("text", "input_text", "output_text"):
                raise _bad(f"{where}.content[{j}]: only text parts are supported")
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{j}].text must be a string")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"{where}.content must be a string, a list of text parts or null")


def format_tool_call(call: Any, where: str) -> str:
    """One OpenAI ``tool_calls`` entry → ``<tool_call>{...}</tool_call>``."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(f"{where}: each tool call needs function.name")
    args: Any = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            parsed = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            parsed = None  # rendered as the string it is
        if isinstance(parsed, dict) and args.strip():
            # verbatim: the text the model sampled renders back to the same text, so the next turn's prompt
            # extends this turn's tokens (clean continuity) instead of a re-serialized variant (a fork)
            name = json.dumps(fn["name"], ensure_ascii=False)
            return f'<tool_call>{{"name": {name}, "arguments": {args.strip()}}}</tool_call>'
        if parsed is not None:
            args = parsed
    body = json.dumps({"name": fn["name"], "arguments": args}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def _assistant_text(msg: dict[str, Any], where: str) -> str:
    text = content_text(msg.get("content"), where)
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls must be a list")
    rendered = [format_tool_call(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(calls)]
    return "\n".join([text, *rendered] if text else rendered)


def to_template_messages(messages: Any, tools: Sequence[Any] | None = None) -> list[dict[str, str]]:
    """Validate OpenAI-format messages and turn them into template messages (role + text)."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    out: list[dict[str, str]] = []
    pending_results: list[str] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad(f"{where} must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
        if role in ("tool", "function"):
            result = content_text(msg.get("content"), where)
            pending_results.append(f"<tool_response>\n{result}\n</tool_response>")
            continue
        if pending_results:
            out.append({"role": "user", "content": "\n".join(pending_results)})
            pending_results = []
        if role == "assistant":
            out.append({"role": "assistant", "content": _assistant_text(msg, where)})
        else:
            out.append({"role": "system" if role == "developer" else role,
                        "content": content_text(msg.get("content"), where)})
    if pending_results:
        out.append({"role": "user", "content": "\n".join(pending_results)})
    specs = normalize_tools(tools)
    if specs:
        block = tools_block(specs)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": f"{DEFAULT_SYSTEM}\n\n{block}"})
    return out


__all__ = ["DEFAULT_SYSTEM", "normalize_tools", "tools_block", "content_text", "format_tool_call",
           "to_template_messages"]
