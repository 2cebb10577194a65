"""Forced tool calls on vLLM's token path: ``tool_choice`` naming a function or ``"required"`` becomes a
constraint on the completion, in vLLM's structured-output field of ``/v1/completions``.

The constraint is the renderer's own call syntax around the function's ``parameters`` schema, so the
sampled turn is a call the renderer parses and renders back the way the model saw calls described: for the
generic renderer's hermes convention ``<tool_call>{"name": "NAME", "arguments": <JSON of the schema>}
</tool_call>``, then only the end of turn. It is an xgrammar structural tag (``structured_outputs:
{"structural_tag": ...}``: a sequence of constant text and a JSON schema; ``"required"`` is an ``or`` over
the tools). A renderer without a known call syntax leaves such calls in chat mode (the caller says why).
"""

from __future__ import annotations

import json
from typing import Any

from ..render.base import Renderer
from ..types import Json


def call_syntax(renderer: Renderer) -> tuple[str, str] | None:
    """The text around one call's JSON body (``<tool_call>``, ``</tool_call>``), or None when unknown."""
    syntax = getattr(renderer, "call_syntax", None)
    if isinstance(syntax, tuple) and len(syntax) == 2 and all(isinstance(s, str) for s in syntax):
        return syntax[0], syntax[1]
    return None


def _schema(tool: Json) -> Any:
    fn = tool.get("function")
    params = (fn if isinstance(fn, dict) else tool).get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object"}


def _call(open_: str, close: str, name: str, schema: Any) -> Json:
    head = f'{open_}{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
    return {"type": "sequence", "elements": [{"type": "const_string", "value": head},
                                             {"type": "json_schema", "json_schema": schema},
                                             {"type": "const_string", "value": "}" + close}]}


def _named(tools: list[Json]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.setdefault(fn["name"], t)
    return out


def forced_call(renderer: Renderer, tools: Any, tool_choice: Any) -> tuple[Json | None, str | None]:
    """(vLLM's ``structured_outputs`` forcing the call, None) or (None, why it cannot be forced)."""
    syntax = call_syntax(renderer)
    if syntax is None:
        return None, f"renderer {renderer.name} has no known call syntax to force a tool call with"
    by_name = _named(tools if isinstance(tools, list) else [])
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in by_name:
            return None, f"tool_choice names {name!r}, which is not one of the tools"
        fmt = _call(*syntax, name, _schema(by_name[name]))
    else:
        if not by_name:
            return None, "tool_choice 'required' with no tools"
        calls = [_call(*syntax, n, _schema(t)) for n, t in by_name.items()]
        fmt = calls[0] if len(calls) == 1 else {"type": "or", "elements": calls}
    tag = {"type": "structural_tag", "format": fmt}
    return {"structural_tag": json.dumps(tag, ensure_ascii=False)}, None


__all__ = ["forced_call", "call_syntax"]
