"""Batch selection for SqliteStore: pick ready groups (or groups whose lease expired), apply the filters
of CONTRACT §4 per trajectory, lease the chosen groups atomically (runs on the writer thread)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

from ..records import BatchIn
from .base import BatchSelection, Json
from .codec import dumps, loads

TRAJ_PICK = ("trajectory_id, reward, reward_components, quality, trainable, min_policy, metadata, n_steps,"
             " completed_at, tags")


def trajectory_exclusion(request: BatchIn, row: tuple[Any, ...], policy: int) -> str | None:
    """The reason a complete trajectory is kept out of a batch, or None."""
    f = request.filters
    _, reward, _, quality, trainable, min_policy, *_ = row
    if f.trainable_only and not trainable:
        return "untrainable"
    if f.quality_in is not None and quality not in f.quality_in:
        return "quality"
    if f.quality_not_in is not None and quality in f.quality_not_in:
        return "quality"
    if f.reward_present and reward is None:
        return "no_reward"
    if f.min_reward is not None and (reward is None or reward < f.min_reward):
        return "below_min_reward"
    if f.max_staleness is not None and min_policy is not None and policy - min_policy > f.max_staleness:
        return "stale"
    return None


def pick_group(request: BatchIn, rows: list[tuple[Any, ...]], policy: int, excluded: dict[str, int]
               ) -> list[Json] | None:
    kept: list[Json] = []
    for row in rows:
        reason = trajectory_exclusion(request, row, policy)
        if reason:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        kept.append({"trajectory_id": row[0], "reward": row[1], "reward_components": loads(row[2]) or {},
                     "quality": row[3], "metadata": loads(row[6]) or {}, "n_steps": row[7],
                     "completed_at": row[8], "tags": loads(row[9]) or []})
    if not kept:
        excluded["empty_group"] = excluded.get("empty_group", 0) + 1
        return None
    if request.filters.drop_zero_variance:
        rewards = {t["reward"] for t in kept}
        if len(kept) < 2 or len(rewards) == 1:
            excluded["zero_variance"] = excluded.get("zero_variance", 0) + 1
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
            "SELECT group_id FROM groups WHERE channel = ? AND (status = 'ready' OR (status = 'leased' AND"
            " lease_expires_at < ?)) ORDER BY ready_at, group_id LIMIT ? OFFSET ?",
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


__all__ = ["select_groups", "trajectory_exclusion", "pick_group"]
