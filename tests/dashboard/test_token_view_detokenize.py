"""The token view without a local tokenizer: each id's text from the upstream's ``POST /detokenize`` (vLLM's
wire, here the fake upstream's byte-level toy vocabulary), characters split over tokens kept whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from steplake.app import create_app
from steplake.config import Settings
from steplake.store.sqlite import SqliteStore
from steplake.upstreams.tokenizer import utf8_pieces
from tests.api.servers import asgi_client
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread, render

TEXT = "Café → 😀 and 中文, naïve"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamThread]:
    f = FakeUpstreamThread(free_port()).start()
    yield f
    f.stop()


@pytest_asyncio.fixture(loop_scope="function", params=["", "vllm+", "steplake+"])
async def client(request: pytest.FixtureRequest, tmp_path: Path,
                 upstream: FakeUpstreamThread) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[request.param + upstream.url], capture_sync=True)
    async with asgi_client(create_app(settings, SqliteStore(settings.db))) as c:
        yield c


async def token_view(client: httpx.AsyncClient, step_id: str) -> dict[str, Any]:
    r = await client.get("/api/v1/dashboard/tokens", params={"step_id": step_id})
    assert r.status_code == 200, r.text
    return dict(r.json())


def expected(ids: list[int]) -> list[str]:
    names = {1: "<|eot|>", 1000: "<|system|>", 1001: "<|user|>", 1002: "<|assistant|>", 1003: "<|tool|>"}
    return utf8_pieces(names[i].encode() if i in names else bytes([i]) for i in ids)


async def test_a_step_decodes_through_the_upstreams_detokenize(client: httpx.AsyncClient,
                                                              upstream: FakeUpstreamThread) -> None:
    messages = [{"role": "user", "content": TEXT}]
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert r.status_code == 200, r.text
    step = (await client.get("/api/v1/steps")).json()["items"][0]
    assert step["prompt_ids"] == render(messages)
    before = upstream.fake.detokenize_calls
    view = await token_view(client, step["step_id"])
    assert view["tokenizer"] == f"{upstream.url}/detokenize" and view["tokenizer_error"] is None
    assert view["prompt"] == expected(step["prompt_ids"]) and view["response"] == expected(step["response_ids"])
    assert "".join(view["prompt"]) == f"<|user|>{TEXT}<|eot|><|assistant|>"
    assert "😀" in view["prompt"] and "中" in view["prompt"] and "é" in view["prompt"]  # whole characters
    assert "".join(view["response"]).startswith("echo: ") and "\ufffd" not in "".join(view["response"])
    calls = upstream.fake.detokenize_calls - before
    # each distinct id once (cached after), plus a few windows for the characters split over tokens
    distinct = len(set(step["prompt_ids"] + step["response_ids"]))
    assert distinct <= calls <= distinct + 60
    await token_view(client, step["step_id"])
    assert upstream.fake.detokenize_calls - before - calls <= 60  # the ids' own texts are cached


async def test_ids_the_upstream_refuses_read_as_ids(client: httpx.AsyncClient) -> None:
    step = {"trajectory_id": "t", "step_index": 0, "prompt_ids": [1001, 72, 105, 99999], "response_ids": [240, 159],
            "messages": [{"role": "user", "content": "Hi"}]}
    assert (await client.post("/api/v1/steps", json={"steps": [step]})).status_code == 200
    sid = (await client.get("/api/v1/steps")).json()["items"][0]["step_id"]
    view = await token_view(client, sid)
    assert view["prompt"] == ["<|user|>", "H", "i", "<99999>"]
    assert view["response"] == ["", "\ufffd"]  # a character cut off at the end reads U+FFFD


async def test_an_upstream_without_detokenize_falls_back_to_ids(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[f"vllm+http://127.0.0.1:{port}"])
    async with asgi_client(create_app(settings, SqliteStore(settings.db), gateway=False)) as c:
        step = {"trajectory_id": "t", "step_index": 0, "prompt_ids": [5, 6], "response_ids": [7]}
        assert (await c.post("/api/v1/steps", json={"steps": [step]})).status_code == 200
        sid = (await c.get("/api/v1/steps")).json()["items"][0]["step_id"]
        view = await token_view(c, sid)
    assert view["tokenizer"] is None and view["prompt"] == ["<5>", "<6>"] and view["response"] == ["<7>"]
    assert f"127.0.0.1:{port}/detokenize" in view["tokenizer_error"]
