"""The Pool's plain doors to the store: keys, the audit log, reads the routes answer with, health checks,
the dashboard overview and jobs over the store (exports).

Nothing outside ``steplake.pool`` reaches the store itself: every call goes through ``Pool._run``, counted
until its worker thread is done, so ``Pool.stop`` waits for it before closing the store
(tests/test_architecture.py enforces it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from ..errors import NotFoundError
from ..store.base import KeyRecord, Page, Store
from ..types import Json

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class StoreAddress:
    """Where the pool's data lives (exports are kept in a folder named after it): a SQLite file's path, or a
    PostgreSQL URL and schema."""

    path: str | None = None
    url: str | None = None
    schema: str | None = None


class StoreAccess:
    """Mixin of :class:`~steplake.pool.pool.Pool`: typed wrappers that need nothing but the call."""

    store: Store

    async def _run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        raise NotImplementedError  # Pool._run

    @property
    def store_address(self) -> StoreAddress:
        def text(name: str) -> str | None:
            value = getattr(self.store, name, None)
            return None if value is None else str(value)
        return StoreAddress(path=text("path"), url=text("url"), schema=text("schema"))

    async def run_job(self, fn: Callable[Concatenate[Store, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(store, *args, **kwargs)`` in a worker thread, counted like every store call: a synchronous job
        that reads the store through its protocol page by page (an export)."""
        return await self._run(fn, self.store, *args, **kwargs)

    # health ------------------------------------------------------------------------------------------
    async def probe(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError  # Pool.probe

    async def ping(self) -> bool:
        return await self.probe(self.store.ping)

    async def storage_problem(self) -> str | None:
        """Why writes fail now (disk full), else None."""
        return await self.probe(self.store.storage_problem)

    # keys --------------------------------------------------------------------------------------------
    async def has_keys(self) -> bool:
        return await self._run(self.store.has_keys)

    async def list_keys(self) -> list[KeyRecord]:
        return await self._run(self.store.list_keys)

    async def lookup_key(self, secret: str) -> KeyRecord | None:
        return await self._run(self.store.lookup_key, secret)

    async def create_key(self, scope: str, name: str | None, binding: Json | None = None) -> tuple[KeyRecord, str]:
        return await self._run(self.store.create_key, scope, name, binding)

    async def revoke_key(self, key_id: str) -> bool:
        return await self._run(self.store.revoke_key, key_id)

    async def rebind_key(self, key_id: str, binding: Json) -> bool:
        """A session key follows its session to a new trajectory."""
        return await self._run(self.store.rebind_key, key_id, binding)

    # audit log ---------------------------------------------------------------------------------------
    async def append_audit(self, entry: Json) -> Json:
        return await self._run(self.store.append_audit, entry)

    async def list_audit(self, filters: Json, cursor: str | None, limit: int) -> Page:
        return await self._run(self.store.list_audit, filters, cursor, limit)

    # reads -------------------------------------------------------------------------------------------
    async def list_rewards(self, trajectory_id: str | None = None, step_id: str | None = None) -> list[Json]:
        return await self._run(self.store.list_rewards, trajectory_id, step_id)

    async def list_feedback(self, filters: Json) -> list[Json]:
        return await self._run(self.store.list_feedback, filters)

    async def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]:
        return await self._run(self.store.trajectory_ids_matching, filters, limit)

    async def get_batch(self, batch_id: str) -> Json:
        b = await self._run(self.store.get_batch, batch_id)
        if b is None:
            raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
        return b


__all__ = ["StoreAccess", "StoreAddress"]
