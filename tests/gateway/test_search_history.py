"""Message search on trajectories the gateway attributes automatically (rule 4): every message of a
conversation is found, also the history an agent sends on its first call through the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from steplake.app import create_app
from steplake.config import Settings
from tests.api.servers import asgi_client
from tests.conftest import BACKENDS, free_port, make_store
from tests.gateway.fake_upstream import FakeUpstreamThread

BACKEND_PARAMS = [pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else []) for b in BACKENDS]

HISTORY = [
    {"role": "system", "content": "You are a travel agent for Quillborough Tours."},
    {"role": "user", "content": "I want to visit the Marmalade lighthouse."},
    {"role": "assistant", "content": "Which month suits you, Zephyrine?"},
    {"role": "user", "content": "Late Octember, with the Brindlewick ferry."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "ferry_lookup", "arguments": '{"route": "Vantor"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "Ferry Grimsel leaves at 9"},
    {"role": "assistant", "content": "The Grimsel ferry suits. Anything else?"},
    {"role": "user", "content": "Book the final Pelladine cabin."},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamThread]:
    f = FakeUpstreamThread(free_port()).start()
    yield f
    f.stop()


@pytest_asyncio.fixture(params=BACKEND_PARAMS, loop_scope="function")
async def client(request: pytest.FixtureRequest, tmp_path: Path,
                 upstream: FakeUpstreamThread) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[upstream.url], capture_sync=True)
    async with asgi_client(create_app(settings, make_store(request.param, tmp_path))) as c:
        yield c


async def found(client: httpx.AsyncClient, q: str) -> list[str]:
    r = await client.get("/api/v1/trajectories", params={"q": q})
    assert r.status_code == 200, r.text
    return [t["trajectory_id"] for t in r.json()["items"]]


async def chat(client: httpx.AsyncClient, messages: list[dict[str, Any]]) -> dict[str, Any]:
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert r.status_code == 200, r.text
    return dict(r.json()["choices"][0]["message"])


async def test_first_call_with_history_indexes_every_message(client: httpx.AsyncClient) -> None:
    await chat(client, HISTORY)
    trajs = (await client.get("/api/v1/trajectories")).json()["items"]
    assert len(trajs) == 1
    tid = trajs[0]["trajectory_id"]
    words = ["Quillborough", "marmalade", "Zephyrine", "octember", "brindlewick", "ferry_lookup", "Vantor",
             "grimsel", "Pelladine", "echo"]  # every message before the last assistant turn, then the rest
    assert {w: await found(client, w) for w in words} == {w: [tid] for w in words}


async def test_a_continued_trajectory_still_finds_each_message(client: httpx.AsyncClient) -> None:
    first = [HISTORY[0], HISTORY[1]]
    answer = await chat(client, first)
    await chat(client, [*first, {"role": "assistant", "content": answer["content"]},
                        {"role": "user", "content": "And the Brindlewick ferry?"}])
    trajs = (await client.get("/api/v1/trajectories")).json()["items"]
    assert len(trajs) == 1 and trajs[0]["n_steps"] == 2  # rule 4 joined the second call to the first
    tid = trajs[0]["trajectory_id"]
    for w in ["Quillborough", "marmalade", "brindlewick"]:
        assert await found(client, w) == [tid]
