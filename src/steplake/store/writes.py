"""Writes both stores make the same way, written once in the dialect's SQL (store/dialect.py), on a write
transaction handle (``WriteTx``: the SQLite writer's connection wrapped by store/writer.py ``SqliteTx``,
PostgreSQL's ``Tx`` of store/postgres_tx.py). A backend provides ``_tx(fn, keys)``: run ``fn(tx)`` in a
committed write, ``keys`` the trajectories and groups it changes (PostgreSQL locks them first)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from ..errors import NotFoundError
from ..types import Json
from . import claims
from .claims import ClaimKey
from .codec import dumps
from .dialect import Dialect
from .keys import check_binding

T = TypeVar("T")


class WriteTx(Protocol):
    """One open write transaction."""

    def q(self, sql: str, args: Any = ()) -> Any: ...  # execute: a cursor (``rowcount``, ``fetchone``)
    def one(self, sql: str, args: Any = ()) -> Any: ...
    def all(self, sql: str, args: Any = ()) -> list[Any]: ...
    def event(self, kind: str, data: Json, now: float) -> None: ...
    def count(self, deltas: dict[str, int]) -> None: ...


class StoreWrites:
    dialect: ClassVar[Dialect]

    def _tx(self, fn: Callable[[Any], Any], keys: Sequence[str] = ()) -> Any:
        raise NotImplementedError  # the backend's committed write

    def get_batch(self, batch_id: str) -> Json | None:
        raise NotImplementedError  # store/reads.py

    # -- reward claims (store/claims.py) ---------------------------------------------------------------
    def claim_rewards(self, keys: Sequence[ClaimKey], owner: str, stale_after: float,
                      now: float | None = None) -> list[ClaimKey]:
        t = time.time() if now is None else now
        ph = self.dialect.ph
        return self._tx(lambda tx: claims.claim(tx.q, ph, keys, owner, stale_after, t))  # type: ignore[no-any-return]

    def settle_rewards(self, keys: Sequence[ClaimKey], owner: str, done: bool) -> None:
        ph = self.dialect.ph
        self._tx(lambda tx: claims.settle(tx.q, ph, keys, owner, done, time.time()))

    # -- batches ----------------------------------------------------------------------------------------
    def record_batch_details(self, batch_id: str, details: Json) -> None:
        sql = self.dialect.sql("UPDATE batches SET details = ? WHERE batch_id = ?")
        self._tx(lambda tx: tx.q(sql, (dumps(details), batch_id)))

    def ack_batch(self, batch_id: str) -> Json:
        self._tx(lambda tx: self._w_ack_batch(tx, batch_id))
        b = self.get_batch(batch_id)
        assert b is not None
        return b

    def _w_ack_batch(self, tx: WriteTx, batch_id: str) -> None:
        """The batch's leased groups become consumed (once: a second ack changes nothing)."""
        d = self.dialect
        row = tx.one(d.sql("SELECT acked_at FROM batches WHERE batch_id = ?") + d.for_update, (batch_id,))
        if row is None:
            raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
        if row[0] is not None:
            return
        now = time.time()
        tx.q(d.sql("UPDATE batches SET acked_at = ? WHERE batch_id = ?"), (now, batch_id))
        gids = [r[0] for r in tx.all(d.sql("UPDATE groups SET status = 'consumed', consumed_at = ?"
                                           " WHERE lease_batch_id = ? AND status = 'leased' RETURNING group_id"),
                                     (now, batch_id))]
        tx.event("batch", {"batch_id": batch_id, "status": "consumed", "group_ids": sorted(gids)}, now)

    # -- keys -------------------------------------------------------------------------------------------
    def rebind_key(self, key_id: str, binding: Json) -> bool:
        bound = check_binding("agent", binding)
        sql = self.dialect.sql("UPDATE keys SET binding = ? WHERE key_id = ? AND binding IS NOT NULL")
        return bool(self._tx(lambda tx: tx.q(sql, (dumps(bound), key_id)).rowcount > 0))

    def revoke_key(self, key_id: str) -> bool:
        sql = self.dialect.sql("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL")
        return bool(self._tx(lambda tx: tx.q(sql, (time.time(), key_id)).rowcount > 0))


__all__ = ["StoreWrites", "WriteTx"]
