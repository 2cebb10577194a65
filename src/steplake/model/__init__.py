"""The embedded local model (SmolLM2-135M-Instruct) and its OpenAI-compatible server.

Importing this package imports neither torch nor transformers; the names below are loaded on first use.
``LocalModel`` (engine.py) loads the weights lazily; ``create_model_app`` (server.py) serves them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalModel": "engine", "find_default_gguf": "engine", "GGUF_NAME": "constants",
    "DEFAULT_MODEL_NAME": "constants",
    "SamplingParams": "sampling",
    "Generation": "decoding", "TokenPiece": "decoding", "Forced": "decoding", "Free": "decoding",
    "JsonValue": "decoding", "OneOf": "decoding", "FREE_PLAN": "decoding",
    "parse_tool_calls": "tools", "forced_tool_plan": "tools", "ToolCall": "tools", "ParsedOutput": "tools",
    "create_model_app": "server",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_EXPORTS)
