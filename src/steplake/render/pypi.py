"""Renderers from the ``renderers`` package (PyPI; the optional extra ``steplake[render]``): typed
renderers for Qwen3/3.5, Llama 3, GLM, Kimi, gpt-oss, DeepSeek, MiniMax, Nemotron… with their own bridge
and parsers. Used where it has a renderer for the model; its ``DefaultRenderer`` has no bridge, so other
templates get the generic one (``generic.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import RenderError
from ..types import Json
from .base import Parsed, ParsedCall


def available() -> bool:
    try:
        import renderers  # noqa: F401
    except ImportError:
        return False
    return True


def renderer_name_for(model: str) -> str | None:
    """The ``renderers`` name registered for a model name (``Qwen/Qwen3-8B`` → ``qwen3``), or None."""
    if not available():
        return None
    from renderers.base import MODEL_RENDERER_MAP

    name = MODEL_RENDERER_MAP.get(model)
    return name if isinstance(name, str) else None


def known_name(name: str) -> bool:
    if not available():
        return False
    from renderers import config_from_name

    try:
        return config_from_name(name) is not None
    except ValueError:
        return False


class PackageRenderer:
    """A ``renderers`` renderer behind steplake's ``Renderer`` protocol."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        from renderers import config_from_name, create_renderer

        self.name = f"renderers:{name}"
        self.inner = create_renderer(tokenizer, config_from_name(name))

    def render(self, messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        return list(self.inner.render_ids(list(messages), tools=list(tools) if tools else None,
                                          add_generation_prompt=True))

    def bridge(self, prev_prompt_ids: Sequence[int], prev_response_ids: Sequence[int],
               new_messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        out = self.inner.bridge_to_next_turn(list(prev_prompt_ids), list(prev_response_ids), list(new_messages),
                                             tools=list(tools) if tools else None)
        ids = getattr(out, "token_ids", out)
        if ids is None:
            raise RenderError(f"renderer {self.name} has no bridge for these messages")
        prev = [*prev_prompt_ids, *prev_response_ids]
        if list(ids[: len(prev)]) != prev:
            raise RenderError(f"renderer {self.name} bridged to ids that do not extend the sampled sequence")
        return list(ids[len(prev):])

    def parse(self, ids: Sequence[int], text: str | None = None) -> Parsed:
        r = self.inner.parse_response(list(ids))
        out = Parsed(content=r.content or None, reasoning=r.reasoning_content)
        for k, tc in enumerate(r.tool_calls):
            status = str(getattr(tc.status, "value", tc.status))
            if status != "ok" or not tc.name:
                out.problems.append(f"tool call {k} did not parse ({status}); kept as text")
                out.content = (out.content or "") + tc.raw
                continue
            args = tc.arguments
            out.tool_calls.append(ParsedCall(tc.name, args if isinstance(args, str)
                                             else json.dumps(args or {}, ensure_ascii=False)))
        return out


__all__ = ["PackageRenderer", "available", "renderer_name_for", "known_name"]
