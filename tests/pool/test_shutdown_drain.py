"""Pool.stop waits for store calls still running in threads, and not for calls cancelled before they ran."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from steplake.pool.pool import Pool
from steplake.store.sqlite import SqliteStore


async def test_a_call_cancelled_while_queued_does_not_hold_up_stop(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))  # one worker: the second call must queue
    pool = Pool(SqliteStore(tmp_path / "pool.db"))
    await pool.start()
    release = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        release.wait(10)
        ran.append("slow")

    def queued() -> None:
        ran.append("queued")

    busy = asyncio.ensure_future(pool._run(slow))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(pool._run(queued))
    await asyncio.sleep(0.05)
    waiting.cancel()  # an HTTP request gone away (or shutdown cancelling tasks) while its call was queued
    await asyncio.sleep(0.05)
    assert pool._inflight == 1  # only the call that is running
    release.set()
    await busy
    t0 = time.monotonic()
    await pool.stop()
    assert time.monotonic() - t0 < 5  # stop used to wait its full 30 s for the call that never ran
    assert ran == ["slow"] and pool._inflight == 0
