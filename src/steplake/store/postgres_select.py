"""Batch selection of PostgresStore: candidate groups in pages locked with ``FOR UPDATE SKIP LOCKED`` (not for
a dry run), so trainers on several servers never lease the same group; one query reads a page's complete
trajectories (store/selection.py chooses and leases)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..records import BatchIn
from .base import BatchSelection
from .dialect import POSTGRES
from .postgres_tx import Tx
from .selection import SERVABLE, TRAJ_PICK, Candidate, choose_groups, lease_groups


def candidates(tx: Tx, request: BatchIn, now: float) -> Iterator[Candidate]:
    lock = "" if request.dry_run else POSTGRES.skip_locked
    seen: list[str] = []
    page = max(16, request.groups * 2)
    while True:
        cands = [r[0] for r in tx.all(
            f"SELECT group_id FROM groups WHERE channel = %s AND {SERVABLE.format(p='%s')}"
            " AND NOT (group_id = ANY(%s)) ORDER BY ready_at, group_id LIMIT %s" + lock,
            (request.channel, now, seen, page))]
        if not cands:
            return
        seen += cands
        by_group: dict[str, list[tuple[Any, ...]]] = {g: [] for g in cands}
        for row in tx.all(f"SELECT group_id, {TRAJ_PICK} FROM trajectories WHERE group_id = ANY(%s)"
                          " AND status = 'complete' ORDER BY seq", (cands,)):
            by_group[row[0]].append(tuple(row[1:]))
        for gid in cands:
            yield gid, by_group[gid]


def pg_select_groups(tx: Tx, request: BatchIn) -> BatchSelection:
    now = time.time()
    policy: int = tx.one("SELECT COALESCE(MAX(version), 0) FROM policy")[0]
    chosen, excluded = choose_groups(request, policy, candidates(tx, request, now))
    return lease_groups(tx, POSTGRES, request, policy, chosen, excluded, now)


__all__ = ["pg_select_groups"]
