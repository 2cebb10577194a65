"""Batch selection for PostgresStore: ready groups (or groups whose lease expired) are locked with
``FOR UPDATE SKIP LOCKED``, so trainers on several servers never lease the same group; the filters of
CONTRACT §4 (rules/leases.py) are applied as in the SQLite store (store/selection.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..records import BatchIn
from .base import BatchSelection, Json
from .codec import dumps
from .postgres_tx import Tx
from .selection import SERVABLE, TRAJ_PICK, pick_group


def pg_select_groups(tx: Tx, request: BatchIn) -> BatchSelection:
    now = time.time()
    policy: int = tx.one("SELECT COALESCE(MAX(version), 0) FROM policy")[0]
    lock = "" if request.dry_run else " FOR UPDATE SKIP LOCKED"
    excluded: dict[str, int] = {}
    chosen: list[Json] = []
    seen: list[str] = []
    page = max(16, request.groups * 2)
    while len(chosen) < request.groups:
        cands = [r[0] for r in tx.all(
            f"SELECT group_id FROM groups WHERE channel = %s AND {SERVABLE.format(p='%s')}"
            " AND NOT (group_id = ANY(%s)) ORDER BY ready_at, group_id LIMIT %s" + lock,
            (request.channel, now, seen, page))]
        if not cands:
            break
        seen += cands
        by_group: dict[str, list[tuple[Any, ...]]] = {g: [] for g in cands}
        for row in tx.all(f"SELECT group_id, {TRAJ_PICK} FROM trajectories WHERE group_id = ANY(%s)"
                          " AND status = 'complete' ORDER BY seq", (cands,)):
            by_group[row[0]].append(tuple(row[1:]))
        for gid in cands:
            kept = pick_group(request, by_group[gid], policy, excluded)
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
    tx.q("UPDATE groups SET status = 'leased', lease_batch_id = %s, lease_expires_at = %s WHERE group_id = ANY(%s)",
         (batch_id, expires, gids))
    tx.q("INSERT INTO batches(batch_id, channel, recipe, layout, request, group_ids, trajectory_ids, policy_version,"
         " created_at, lease_expires_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
         (batch_id, request.channel, request.recipe, request.layout, dumps(request.model_dump()), dumps(gids),
          dumps(tids), policy, now, expires))
    tx.event("batch", {"batch_id": batch_id, "status": "leased", "group_ids": gids, "lease_expires_at": expires}, now)
    return BatchSelection(batch_id, expires, chosen, excluded, policy)


__all__ = ["pg_select_groups"]
