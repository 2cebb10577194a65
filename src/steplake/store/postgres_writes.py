"""Write operations of PostgresStore that are its own: the hooks of the writes shared with SQLite
(store/writes.py). Each runs inside a write transaction (``Tx``).

Several servers may write the same trajectory: every write that reads-then-changes a trajectory first
locks its row (``SELECT ... FOR UPDATE``; several trajectories in sorted order), and continuity is computed
from what the database holds under that lock (the trajectory row keeps its last step's full sequence while
it is open), so no per-process cache can go stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dialect import POSTGRES
from .postgres_tx import Tx, lock_key
from .writes import StoreWrites


@dataclass
class PgTraj:
    """A trajectory's append state, read under its row lock."""

    group_id: str
    channel: str
    status: str
    next_index: int
    last_step_id: str | None
    last_seq: bytes | None  # None with last_step_id set: rebuild from the chain when needed

    @property
    def last_index(self) -> int:
        return self.next_index - 1 if self.last_step_id is not None else -1


class PgWrites(StoreWrites):
    dialect = POSTGRES
    _closed_sets = ", last_seq = NULL"  # the last step's sequence is kept while a trajectory is open
    _policy_key: int

    def _full_seq_for(self, conn: Any, trajectory_id: str, below_index: int | None
                      ) -> tuple[int, str | None, bytes | None]:
        raise NotImplementedError  # store/reads.py

    def _find_trajectory(self, tx: Tx, tid: str) -> PgTraj | None:  # type: ignore[override]
        return self._lock_traj(tx, tid)

    def _lock_traj(self, tx: Tx, tid: str) -> PgTraj | None:
        row = tx.one("SELECT group_id, channel, status, next_index, last_step_id, last_seq FROM trajectories"
                     " WHERE trajectory_id = %s FOR UPDATE", (tid,))
        if row is None:
            return None
        st = PgTraj(row[0], row[1], row[2], row[3], row[4], row[5])
        if st.next_index > 0 and st.last_step_id is None:  # copied by ``steplake migrate``: no append state yet
            _, st.last_step_id, st.last_seq = self._full_seq_for(tx.conn, tid, None)
        return st

    def _opened_state(self, group_id: str, channel: str) -> PgTraj:
        return PgTraj(group_id, channel, "open", 0, None, None)

    def _claim_idle(self, tx: Tx, tid: str, group_id: str) -> bool:  # type: ignore[override]
        return _try_lock(tx, tid) and _try_lock(tx, group_id)

    def _lock_policy(self, tx: Tx) -> None:  # type: ignore[override]
        tx.q("SELECT pg_advisory_xact_lock(%s)", (self._policy_key,))  # versions increase across servers too

    def _steps_clause(self, tx: Tx, tid: str) -> tuple[str, list[Any], int]:  # type: ignore[override]
        sids = [r[0] for r in tx.all("SELECT step_id FROM steps WHERE trajectory_id = %s", (tid,))]
        return "= ANY(?)", [sids], len(sids)


def _try_lock(tx: Tx, key: str) -> bool:
    return bool(tx.one("SELECT pg_try_advisory_xact_lock(%s)", (lock_key("steplake-t", tx.env.schema, key),))[0])


__all__ = ["PgWrites", "PgTraj"]
