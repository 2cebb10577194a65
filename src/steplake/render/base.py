"""What a renderer is: messages + tools → prompt ids, the ids that extend a sampled turn, and the parse of
a completion back into an assistant message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..types import Json


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON object as text (as sampled when it was clean JSON)


@dataclass
class Parsed:
    """A completion read back: ``content`` (None when empty), ``reasoning``, tool calls, and ``problems``
    (a call that did not parse stays in ``content`` as text and is named here)."""

    content: str | None
    reasoning: str | None = None
    tool_calls: list[ParsedCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@runtime_checkable
class Renderer(Protocol):
    """A model's prompt format. ``render`` and ``bridge`` raise ``BadRequestError`` for messages they cannot
    take (an unknown role, a content part the template has no place for: a 400 naming the part) and
    ``RenderError`` when the template itself does not allow it (not prefix-stable, ...)."""

    name: str

    def render(self, messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        """The prompt ids for ``messages``, ending with the generation prompt."""
        ...

    def bridge(self, prev_prompt_ids: Sequence[int], prev_response_ids: Sequence[int],
               new_messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        """The ids to append to ``prev_prompt_ids + prev_response_ids`` so that the sequence goes on with
        ``new_messages`` (tool results, user turns) and the generation prompt."""
        ...

    def parse(self, ids: Sequence[int], text: str | None = None) -> Parsed:
        """The assistant message in a completion (``text``: its decoded text, when the caller has it)."""
        ...


def load_class(spec: str) -> Any:
    """``module:Class`` → the class; ``ImportError``/``AttributeError`` as raised."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["Renderer", "Parsed", "ParsedCall", "load_class"]
