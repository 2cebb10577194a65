"""The one reward combination (CONTRACT: rewards), used by the reward runner and by both stores.

``reward = Σ weight_c · value_c`` over the components that have a value; a component without a configured
weight counts with ``default_weight`` (1.0), weight 0 switches one off. ``None`` when no component with a
non-zero weight has a value (every weight 0 included): no reward, never a made-up 0.0. An explicit reward
given with ``complete`` wins over the components.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypedDict


class ComponentValue(TypedDict):
    """A trajectory's stored value of one component: the latest one, and the version that produced it."""

    value: float
    version: str


def component_key(function: str, component: str | None = None) -> str:
    """The key a function's values are stored and weighted under: ``component``, else the function's name
    (for ``module:function``, the part after the colon)."""
    return component or function.rpartition(":")[2] or function


def combine(components: Mapping[str, float | None], weights: Mapping[str, float] | None = None, *,
            default_weight: float = 1.0) -> float | None:
    """Weighted sum of component values. Components missing from ``weights`` (all of them without
    ``weights``) get ``default_weight``. Components whose value is None are skipped; None when nothing with
    a non-zero weight has a value."""
    total, used = 0.0, False
    for name, value in components.items():
        weight = default_weight if weights is None else weights.get(name, default_weight)
        if value is None or weight == 0.0:
            continue
        total += weight * float(value)
        used = True
    return total if used else None


def latest_components(rows: Iterable[tuple[str, float, str]]) -> dict[str, ComponentValue]:
    """Rows ``(name, value, version)`` in insertion order → the latest value of each name."""
    out: dict[str, ComponentValue] = {}
    for name, value, version in rows:
        out[name] = {"value": value, "version": version}
    return out


def trajectory_reward(explicit: float | None, components: Mapping[str, ComponentValue],
                      weights: Mapping[str, float]) -> float | None:
    """A trajectory's scalar: its explicit reward, else the combination of its components."""
    if explicit is not None:
        return explicit
    return combine({name: c["value"] for name, c in components.items()}, weights)


__all__ = ["ComponentValue", "combine", "component_key", "latest_components", "trajectory_reward"]
