"""Batch selection of SqliteStore (on the writer thread, so nothing else leases meanwhile): candidate groups
in pages, oldest ready first, each group's complete trajectories read as it is considered
(store/selection.py chooses and leases)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

from ..records import BatchIn
from .base import BatchSelection
from .dialect import SQLITE
from .selection import SERVABLE, TRAJ_PICK, Candidate, choose_groups, lease_groups
from .writer import SqliteTx


def candidates(conn: sqlite3.Connection, request: BatchIn, now: float) -> Iterator[Candidate]:
    offset = 0
    page = max(16, request.groups * 2)
    while True:
        cands = conn.execute(
            f"SELECT group_id FROM groups WHERE channel = ? AND {SERVABLE.format(p='?')}"
            " ORDER BY ready_at, group_id LIMIT ? OFFSET ?",
            (request.channel, now, page, offset)).fetchall()
        if not cands:
            return
        offset += len(cands)
        for (gid,) in cands:
            yield gid, conn.execute(f"SELECT {TRAJ_PICK} FROM trajectories INDEXED BY traj_group WHERE group_id = ?"
                                    " AND status = 'complete' ORDER BY seq", (gid,)).fetchall()


def select_groups(conn: sqlite3.Connection, request: BatchIn, policy: int) -> BatchSelection:
    now = time.time()
    chosen, excluded = choose_groups(request, policy, candidates(conn, request, now))
    return lease_groups(SqliteTx(conn), SQLITE, request, policy, chosen, excluded, now)


__all__ = ["select_groups"]
