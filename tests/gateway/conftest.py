"""Gateway fixtures: a real SqliteStore + Pool, the Gateway mounted on a FastAPI app, a fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from steplake.config import Settings
from steplake.gateway import Gateway
from steplake.pool.pool import Pool
from steplake.store.sqlite import SqliteStore
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread


@pytest.fixture
def fake_up() -> Iterator[FakeUpstreamThread]:
    f = FakeUpstreamThread(free_port()).start()
    yield f
    f.stop()


@dataclass
class Harness:
    app: FastAPI
    gw: Gateway
    pool: Pool
    client: httpx.AsyncClient

    async def steps(self, trajectory_id: str | None = None) -> list[dict[str, Any]]:
        filters = {"trajectory_id": trajectory_id} if trajectory_id else {}
        await self.settle()
        return (await self.pool.list_steps(filters, None, 1000)).items

    async def settle(self) -> None:
        """Wait for background captures and their group commit."""
        import asyncio

        for _ in range(200):
            if not self.gw._tasks and self.pool.captures.pending == 0:
                return
            await asyncio.sleep(0.01)


def build_app(gw: Gateway) -> FastAPI:
    app = FastAPI()
    app.include_router(gw.router)
    return app


@pytest_asyncio.fixture(loop_scope="function")
async def make_harness(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(upstream: list[str], **kw: Any) -> Harness:
        settings = Settings(upstream=upstream, db=str(tmp_path / "pool.db"), **kw)
        # no periodic sweeps / event polls during a test: Pool.stop() may close the store while such a
        # worker-thread read is still running (reported to the lead), which can crash SQLite
        pool = Pool(SqliteStore(tmp_path / "pool.db", commit_window_ms=2.0), idle_timeout=settings.idle_timeout,
                    sweep_interval=3600, event_poll_interval=3600)
        await pool.start()
        gw = Gateway(settings, pool, health_interval=0.5, ready_wait=3.0)
        await gw.start()
        app = build_app(gw)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30)
        h = Harness(app, gw, pool, client)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.client.aclose()
        await h.gw.stop()
        await h.pool.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def harness(make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> Harness:
    return await make_harness([fake_up.url])
