"""Batch selection for SqliteStore: pick ready groups (or groups whose lease expired), apply the filters
of CONTRACT §4 per trajectory, lease the chosen groups atomically (runs on the writer thread). The rules
(which groups qualify, which trajectories a batch keeps) are rules/leases.py; ``SERVABLE`` is their SQL form
and ``pick_group`` their application to selected rows, both shared with postgres_select.py."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

from ..records import BatchIn
from ..rules.leases import group_exclusion, trajectory_exclusion
from .base import BatchSelection, Json
from .codec import dumps, loads

TRAJ_PICK = ("trajectory_id, reward, reward_components, quality, trainable, min_policy, metadata, n_steps,"
             " completed_at, tags")
# rules.leases.group_servable in SQL: ready, or leased with an expired lease ({p}: the dialect's placeholder)
SERVABLE = "(status = 'ready' OR (status = 'leased' AND lease_expires_at < {p}))"


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


def select_groups(store: Any, conn: sqlite3.Connection, request: BatchIn) -> BatchSelection:
    now = time.time()
    policy: int = store._policy_version
    excluded: dict[str, int] = {}
    chosen: list[Json] = []
    offset = 0
    page = max(16, request.groups * 2)
    while len(chosen) < request.groups:
        cands = conn.execute(
            f"SELECT group_id FROM groups WHERE channel = ? AND {SERVABLE.format(p='?')}"
            " ORDER BY ready_at, group_id LIMIT ? OFFSET ?",
            (request.channel, now, page, offset)).fetchall()
        if not cands:
            break
        offset += len(cands)
        for (gid,) in cands:
            rows = conn.execute(f"SELECT {TRAJ_PICK} FROM trajectories INDEXED BY traj_group WHERE group_id = ? AND status = 'complete'"
                                " ORDER BY seq", (gid,)).fetchall()
            kept = pick_group(request, rows, policy, excluded)
            if kept is not None:
                chosen.append({"group_id": gid, "trajectories": kept})
                if len(chosen) >= request.groups:
                    break
    if request.dry_run or not chosen:
        return BatchSelection(None, None, chosen, excluded, policy)
    batch_id = f"b_{uuid.uuid4().hex}"
    expires = now + request.lease_seconds
    gids = [g["group_id"] for g in chosen]
    tids = [t["trajectory_id"] for g in chosen for t in g["trajectories"]]
    conn.executemany("UPDATE groups SET status = 'leased', lease_batch_id = ?, lease_expires_at = ? WHERE group_id = ?",
                     [(batch_id, expires, g) for g in gids])
    conn.execute("INSERT INTO batches(batch_id, channel, recipe, layout, request, group_ids, trajectory_ids,"
                 " policy_version, created_at, lease_expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (batch_id, request.channel, request.recipe, request.layout, dumps(request.model_dump()),
                  dumps(gids), dumps(tids), policy, now, expires))
    store._event(conn, "batch", {"batch_id": batch_id, "status": "leased", "group_ids": gids,
                                 "lease_expires_at": expires}, now)
    return BatchSelection(batch_id, expires, chosen, excluded, policy)


__all__ = ["SERVABLE", "TRAJ_PICK", "pick_group", "select_groups"]
