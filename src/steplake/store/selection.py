"""Batch selection, shared by both stores: which of the candidate groups a batch takes (the filters of
CONTRACT §4 per trajectory, rules/leases.py) and the lease of the chosen ones. Each backend finds the
candidates its own way (store/sqlite_select.py: pages on the writer thread; store/postgres_select.py: pages
locked with ``FOR UPDATE SKIP LOCKED``, so trainers on several servers never lease the same group) and hands
them over lazily: a page is read only while the batch still needs groups."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from ..records import BatchIn
from ..rules.leases import group_exclusion, trajectory_exclusion
from ..types import Json
from .base import BatchSelection
from .codec import dumps, loads
from .dialect import Dialect
from .writes import WriteTx

TRAJ_PICK = ("trajectory_id, reward, reward_components, quality, trainable, min_policy, metadata, n_steps,"
             " completed_at, tags")
# rules.leases.group_servable in SQL: ready, or leased with an expired lease ({p}: the dialect's placeholder)
SERVABLE = "(status = 'ready' OR (status = 'leased' AND lease_expires_at < {p}))"
# a candidate group and its complete trajectories (rows of TRAJ_PICK, in seq order)
Candidate = tuple[str, list[tuple[Any, ...]]]


def pick_group(request: BatchIn, rows: list[tuple[Any, ...]], policy: int, excluded: dict[str, int]
               ) -> list[Json] | None:
    """The trajectories of one group (rows of ``TRAJ_PICK``) a batch keeps, or None when it skips the group;
    each exclusion counted by reason in ``excluded``."""
    kept: list[Json] = []
    f = request.filters
    for row in rows:
        reason = trajectory_exclusion(f, policy, reward=row[1], quality=row[3], trainable=row[4], min_policy=row[5])
        if reason:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        kept.append({"trajectory_id": row[0], "reward": row[1], "reward_components": loads(row[2]) or {},
                     "quality": row[3], "metadata": loads(row[6]) or {}, "n_steps": row[7],
                     "completed_at": row[8], "tags": loads(row[9]) or []})
    reason = group_exclusion(f, [t["reward"] for t in kept])
    if reason:
        excluded[reason] = excluded.get(reason, 0) + 1
        return None
    return kept


def choose_groups(request: BatchIn, policy: int, candidates: Iterable[Candidate]
                  ) -> tuple[list[Json], dict[str, int]]:
    """The groups a batch takes, in candidate order, and what was excluded (counted by reason)."""
    chosen: list[Json] = []
    excluded: dict[str, int] = {}
    for gid, rows in candidates:
        kept = pick_group(request, rows, policy, excluded)
        if kept is not None:
            chosen.append({"group_id": gid, "trajectories": kept})
            if len(chosen) >= request.groups:
                break
    return chosen, excluded


def lease_groups(tx: WriteTx, d: Dialect, request: BatchIn, policy: int, chosen: list[Json],
                 excluded: dict[str, int], now: float) -> BatchSelection:
    """Record the batch and lease its groups until ``now + lease_seconds`` (nothing for a dry run)."""
    if request.dry_run or not chosen:
        return BatchSelection(None, None, chosen, excluded, policy)
    batch_id = f"b_{uuid.uuid4().hex}"
    expires = now + request.lease_seconds
    gids = [g["group_id"] for g in chosen]
    tids = [t["trajectory_id"] for g in chosen for t in g["trajectories"]]
    clause, args = d.in_ids("group_id", gids)
    tx.q(d.sql("UPDATE groups SET status = 'leased', lease_batch_id = ?, lease_expires_at = ? WHERE ") + clause,
         (batch_id, expires, *args))
    tx.q(d.sql("INSERT INTO batches(batch_id, channel, recipe, layout, request, group_ids, trajectory_ids,"
               " policy_version, created_at, lease_expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)"),
         (batch_id, request.channel, request.recipe, request.layout, dumps(request.model_dump()), dumps(gids),
          dumps(tids), policy, now, expires))
    tx.event("batch", {"batch_id": batch_id, "status": "leased", "group_ids": gids, "lease_expires_at": expires}, now)
    return BatchSelection(batch_id, expires, chosen, excluded, policy)


__all__ = ["SERVABLE", "TRAJ_PICK", "Candidate", "pick_group", "choose_groups", "lease_groups"]
