"""Hostile and malformed input: a clear 4xx, never a 500, and nothing changes in the pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import step

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    stats = (await client.get("/api/v1/stats")).json()
    return {k: stats[k] for k in ("steps", "trajectories", "groups", "tokens")}


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("content", "status", "fragment"), [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "reward": NaN}]}', 400, "not valid JSON"),
    (b"[1, 2]", 422, "body: Input should be a valid dictionary"),
    (b'{"steps": []}', 422, "steps"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "prompt_ids": ["a"]}]}', 422, "steps[0].prompt_ids[0]"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "prompt_ids": [2147483648]}]}', 422, "prompt_ids[0]"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "prompt_ids": [-2147483649]}]}', 422, "prompt_ids[0]"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "prompt_ids": [1e40]}]}', 422, "prompt_ids[0]"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "prompt_ids": [true]}]}', 422, "prompt_ids[0]"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "response_ids": [1, 2], "response_logprobs": [0.1]}]}',
     422, "align"),
    (b'{"steps": [{"trajectory_id": "x"}]}', 422, "step_index"),
    (b'{"steps": [{"trajectory_id": "../../etc", "step_index": 0}]}', 422, "trajectory_id"),
    (b'{"steps": [{"trajectory_id": "x", "step_index": 0, "bogus": 1}]}', 422, "bogus"),
    (b'"\xed\xa0\x80"', 400, "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
])
async def test_bad_steps_are_refused(client: httpx.AsyncClient, content: bytes, status: int, fragment: str) -> None:
    before = await snapshot(client)
    r = await client.post("/api/v1/steps", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in error_of(r)["message"]
    assert await snapshot(client) == before


async def test_one_bad_step_rejects_the_whole_call(client: httpx.AsyncClient) -> None:
    good = step("h1", 0, [1, 2], [3])
    bad = step("h1", 1, [1, 2, 3], [4], response_logprobs=[0.1, 0.2])
    before = await snapshot(client)
    r = await client.post("/api/v1/steps", json={"steps": [good, bad]})
    assert r.status_code == 422 and "steps[1]" in error_of(r)["message"]
    assert await snapshot(client) == before


async def test_duplicate_step_id(client: httpx.AsyncClient) -> None:
    s = step("d1", 0, [1, 2], [3], step_id="dup")
    assert (await client.post("/api/v1/steps", json={"steps": [s]})).status_code == 200
    again = await client.post("/api/v1/steps", json={"steps": [s]})
    assert again.status_code == 200
    before = await snapshot(client)
    other = step("d1", 0, [1, 2], [9], step_id="dup")
    r = await client.post("/api/v1/steps", json={"steps": [other]})
    assert r.status_code == 409 and error_of(r)["type"] == "conflict_error"
    assert await snapshot(client) == before
    assert (await client.get("/api/v1/steps/dup")).json()["response_ids"] == [3]


async def test_unknown_targets_are_404(client: httpx.AsyncClient) -> None:
    before = await snapshot(client)
    r = await client.post("/api/v1/trajectories/nope/complete", json={"reward": 1})
    assert r.status_code == 404 and error_of(r)["code"] == "trajectory_not_found"
    assert (await client.delete("/api/v1/trajectories/nope")).status_code == 404
    assert (await client.get("/api/v1/groups/nope")).status_code == 404
    assert (await client.post("/api/v1/batches/nope/ack")).status_code == 404
    assert await snapshot(client) == before


async def test_huge_body_is_413_without_reading_it(client: httpx.AsyncClient) -> None:
    before = await snapshot(client)
    big = b"x" * (50 * 1024 * 1024)
    r = await client.post("/api/v1/steps", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than the limit" in error_of(r)["message"]
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
        nonlocal sent
        for _ in range(50):
            sent += 1
            yield b" " * (1024 * 1024)

    r = await client.post("/api/v1/steps", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert sent < 50
    assert await snapshot(client) == before


async def test_routes_methods_and_queries(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and error_of(r)["code"] == "route_not_found"
    r = await client.put("/api/v1/steps")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    for params in ({"limit": 0}, {"limit": "x"}, {"status": "weird"}, {"min_reward": "nan"},
                   {"policy_version": 2**40}, {"since": "-1"}):
        r = await client.get("/api/v1/trajectories", params=params)
        assert r.status_code == 422, (params, r.text)
    r = await client.get("/api/v1/trajectories", params={"cursor": "garbage"})
    assert 400 <= r.status_code < 500
    r = await client.get("/api/v1/curation/history")
    assert r.status_code == 422 and "target_id" in error_of(r)["message"]


async def test_anthropic_paths_get_anthropic_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/messages", content=b"x" * 10, headers={"content-length": str(2**40)})
    assert r.status_code == 413
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(("path", "payload"), [
    ("/api/v1/trajectories", {"group_size": 0}),
    ("/api/v1/trajectories", {"trajectory_id": "a b"}),
    ("/api/v1/groups", {"n": 0}),
    ("/api/v1/groups", {"n": 10**9}),
    ("/api/v1/rewards", {"name": "x", "value": 1}),
    ("/api/v1/curation", {"trajectory_ids": ["a"]}),
    ("/api/v1/feedback", {"step_id": "a", "kind": "rating", "value": "high"}),
    ("/api/v1/batches", {"groups": 1, "wait_seconds": 61}),
    ("/api/v1/batches", {"recipe": "magic"}),
    ("/api/v1/policy", {"version": -1}),
    ("/api/v1/policy", {"version": 2**31}),
])
async def test_bad_bodies_elsewhere(client: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> None:
    before = await snapshot(client)
    r = await client.post(path, json=payload)
    assert r.status_code == 422, r.text
    assert error_of(r)["type"] == "invalid_request_error"
    assert await snapshot(client) == before


@pytest.mark.parametrize("q", ['"', "*", "AND", "NEAR(", "' OR 1=1 --", "%%%", "\\", "a" * 1000, "🎉", "WÖRLD"])
async def test_message_search_takes_any_text(client: httpx.AsyncClient, q: str) -> None:
    """FTS5 query syntax, LIKE wildcards and SQL in a search are plain text; a NUL is a clear 422."""
    step = {"trajectory_id": "h", "step_index": 0, "prompt_ids": [1], "response_ids": [2],
            "messages": [{"role": "user", "content": 'hello wörld 🎉 NEAR( "quoted" %%% \\ nul\u0000here'}]}
    assert (await client.post("/api/v1/steps", json={"steps": [step]})).status_code == 200
    r = await client.get("/api/v1/trajectories", params={"q": q})
    assert r.status_code == 200, r.text
    assert [t["trajectory_id"] for t in r.json()["items"]] == (["h"] if q.lower() in step["messages"][0]["content"].lower() else [])
    r = await client.get("/api/v1/trajectories", params={"q": "nul\x00here"})
    assert r.status_code == 422 and "q" in r.text
