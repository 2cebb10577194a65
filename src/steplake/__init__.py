"""steplake: a step-level data layer for agentic reinforcement learning.

Public names (imported lazily, so ``import steplake`` stays cheap for agents and trainers):
``Client``, ``AsyncClient``, ``Settings``, ``build_settings``, ``create_app``, ``errors``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Client": ("steplake.client", "Client"),
    "AsyncClient": ("steplake.client", "AsyncClient"),
    "Settings": ("steplake.config", "Settings"),
    "build_settings": ("steplake.config", "build_settings"),
    "create_app": ("steplake.app", "create_app"),
    "errors": ("steplake.errors", None),
    "SteplakeError": ("steplake.errors", "SteplakeError"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'steplake' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["Client", "AsyncClient", "Settings", "build_settings", "create_app", "errors", "SteplakeError",
           "__version__"]
