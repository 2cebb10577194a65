"""Data lifecycle: retention per channel (``steplake prune``, ``--retention CHANNEL=DAYS``), on every Store
(through the Store protocol only: the pool's pruner runs it, and the CLI on the database directly).

A trajectory is pruned when it is older than its channel's retention, measured from its last change
(``updated_at``: last step, completion, curation does not count), and it is not in use: not ``open`` (an
agent may still write to it) and not in a group currently leased to a trainer. Pruning deletes the
trajectory with its steps, curation, rewards and feedback (``Store.delete_trajectory``), so both stores
behave alike. The key ``"*"`` sets the retention of every channel without its own entry.

Candidates are found with the list filters every Store has (``channel``, ``status``, ``until`` on
``created_at``, which is never later than ``updated_at``) and then checked exactly against
``updated_at``; no store-specific query is needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..errors import ValidationError
from ..rules.leases import lease_active
from ..store.base import Json, Store

DAY = 86400.0
ALL = "*"


def parse_retention(spec: str | dict[str, Any] | None) -> dict[str, float]:
    """``"train=30,val=7d,*=90"`` or ``{"train": 30}`` → channel → days. Units: ``d`` (default), ``h``, ``m``."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, dict) else (p.partition("=")[::2] for p in spec.split(",") if p.strip())
    out: dict[str, float] = {}
    for channel, value in items:
        channel = str(channel).strip()
        days = _days(value)
        if not channel or days is None or days < 0:
            raise ValidationError(f"retention: expected CHANNEL=DAYS with DAYS >= 0, got {channel}={value}",
                                  code="invalid_retention")
        out[channel] = days
    return out


def _days(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    s = str(value).strip().lower()
    scale = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440}.get(s[-1:]) if s else None
    try:
        return float(s[:-1]) * scale if scale is not None else float(s)
    except ValueError:
        return None


def _trajectories(store: Store, filters: Json) -> Iterator[Json]:
    cursor: str | None = None
    while True:
        page = store.list_trajectories({**filters, "order": "asc"}, cursor, 1000)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


def _channels(store: Store, cutoff: float) -> set[str]:
    """Channels that hold trajectories created before ``cutoff`` (for the ``"*"`` entry)."""
    return {t["channel"] for status in ("complete", "abandoned")
            for t in _trajectories(store, {"status": status, "until": cutoff})}


def prunable(store: Store, channel: str, cutoff: float, now: float) -> Iterator[str]:
    """Trajectory ids of ``channel`` idle since before ``cutoff`` and not in use."""
    leased: dict[str, bool] = {}
    for status in ("complete", "abandoned"):
        for t in _trajectories(store, {"channel": channel, "status": status, "until": cutoff}):
            if t["updated_at"] >= cutoff:
                continue
            gid = t["group_id"]
            if gid not in leased:
                g = store.get_group(gid)
                leased[gid] = g is not None and lease_active(g["status"], g.get("lease_expires_at"), now)
            if not leased[gid]:
                yield t["trajectory_id"]


def prune(store: Store, retention: dict[str, float], now: float | None = None, *, dry_run: bool = False
          ) -> dict[str, int]:
    """Delete what ``retention`` (channel → days) no longer keeps; returns channel → trajectories deleted
    (or that would be, with ``dry_run``)."""
    now = time.time() if now is None else now
    plan = {ch: days for ch, days in retention.items() if ch != ALL}
    if ALL in retention:
        oldest = now - retention[ALL] * DAY
        for ch in _channels(store, oldest) - set(plan):
            plan[ch] = retention[ALL]
    out: dict[str, int] = {}
    for channel, days in sorted(plan.items()):
        cutoff = now - days * DAY
        ids = list(prunable(store, channel, cutoff, now))
        out[channel] = len(ids) if dry_run else sum(bool(store.delete_trajectory(t)) for t in ids)
    return out


__all__ = ["prune", "prunable", "parse_retention"]
