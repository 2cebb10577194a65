"""Stores: one protocol (base.Store), two backends. ``open_store`` picks one from a ``--db`` value."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..rules.rewards import component_key
from .base import AppendResult, BatchSelection, KeyRecord, Page, Store


def open_store(db: str, settings: Any = None) -> Store:
    """``postgresql://...`` → PostgresStore; ``sqlite:///path`` or a plain path → SqliteStore (not yet opened)."""
    window = float(getattr(settings, "commit_window_ms", 0.0) or 0.0)
    rewards = getattr(settings, "rewards", None)
    weights = _weights(rewards) if rewards else None  # how the stores combine reward components
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as e:
            raise ConfigError(f"PostgreSQL store unavailable: {e}") from None
        return PostgresStore(db, commit_window_ms=window, reward_weights=weights)
    from .sqlite import SqliteStore

    path = db[len("sqlite:///"):] if db.startswith("sqlite:///") else db
    if not path or path == ":memory:":
        raise ConfigError("--db needs a file path (an in-memory database would lose acknowledged steps)")
    return SqliteStore(path, commit_window_ms=window, reward_weights=weights)


def _weights(rewards: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for ch in (rewards.get("channels") or {}).values():
        for fn in ch.get("functions", []):
            if "name" in fn:
                out[component_key(fn["name"], fn.get("component"))] = float(fn.get("weight", 1.0))
    return out


__all__ = ["Store", "Page", "AppendResult", "BatchSelection", "KeyRecord", "open_store"]
