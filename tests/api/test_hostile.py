"""Hostile and malformed input: a clear 4xx, never a 500, and nothing changes in the pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from steplake.app import create_app
from steplake.config import Settings
from tests.api.helpers import step
from tests.api.servers import asgi_client, make_app
from tests.conftest import BACKENDS, make_store

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


# --- one acceptance rule on every backend (issues 12.7-12.9, 15.4, 15.6, 15.9) ----------------------------------

ALL_BACKENDS = [pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]


@pytest.fixture(params=ALL_BACKENDS)
async def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process on SQLite and on PostgreSQL: both must answer the same input the same way."""
    app = create_app(Settings(db=str(tmp_path / "pool.db")), make_store(request.param, tmp_path), gateway=False)
    async with asgi_client(app) as c:
        yield c


def nested(n: int) -> str:
    """``n`` nested arrays as JSON text (orjson and json cannot write that deep)."""
    return "[" * n + "]" * n


async def post_raw(client: httpx.AsyncClient, path: str, text: str) -> httpx.Response:
    return await client.post(path, content=text.encode(), headers={"content-type": "application/json"})


async def first_bytes(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, bytes]:
    async with client.stream("GET", "/api/v1/events", headers=headers) as r:
        async for chunk in r.aiter_bytes():
            return r.status_code, chunk
    return r.status_code, b""


async def test_integers_outside_their_column_are_422(any_client: httpx.AsyncClient) -> None:
    """12.7: cursors and Last-Event-ID beyond int64 were a 500 (or a stream broken after its 200);
    policy_version has one range everywhere, 0 to 2^31-1 (accepted on steps, filterable, publishable)."""
    c = any_client
    before = await snapshot(c)
    for path in ("/api/v1/trajectories", "/api/v1/steps", "/api/v1/groups"):
        for cursor in (str(2**63), str(-(2**63) - 1), str(10**30), "-1"):
            r = await c.get(path, params={"cursor": cursor})
            assert r.status_code == 422 and error_of(r)["code"] == "invalid_cursor", (path, cursor, r.text)
        assert (await c.get(path, params={"cursor": str(2**63 - 1)})).status_code == 200
    for v in (2**31, 2**40, 2**63, 2**64, -1):
        r = await c.post("/api/v1/steps", json={"steps": [step("pv", 0, [1], [2], policy_version=v)]})
        assert r.status_code == 422 and "policy_version" in error_of(r)["message"], (v, r.text)
        for path in ("/api/v1/trajectories", "/api/v1/steps"):
            assert (await c.get(path, params={"policy_version": v})).status_code == 422, (path, v)
        assert (await c.post("/api/v1/policy", json={"version": v})).status_code == 422, v
        r = await c.post("/api/v1/dashboard/curate", json={"filters": {"policy_version": str(v)}, "quality": "good"})
        assert r.status_code == 422, (v, r.text)
    r = await c.post("/api/v1/batches", json={"filters": {"max_staleness": 2**63}, "dry_run": True})
    assert r.status_code == 422, r.text
    for bad in (str(2**63), str(10**30), "-1", "abc", "1e3", "1_000"):
        status, body = await first_bytes(c, {"last-event-id": bad})
        assert status == 422 and b"Last-Event-ID" in body, (bad, status, body)
    assert await snapshot(c) == before
    top = 2**31 - 1
    r = await c.post("/api/v1/steps", json={"steps": [step("pv", 0, [1], [2], policy_version=top)]})
    assert r.status_code == 200, r.text
    assert [s["policy_version"] for s in (await c.get("/api/v1/steps", params={"policy_version": top})).json()[
        "items"]] == [top]
    assert (await c.post("/api/v1/policy", json={"version": top})).status_code == 200


async def test_json_nested_too_deep_is_422(any_client: httpx.AsyncClient) -> None:
    """12.8/15.9: 254 levels were a RecursionError 500, 900 levels orjson's recursion limit when storing;
    every free JSON field is bounded at 64 levels, and 64 levels are stored and read back."""
    c = any_client
    assert (await c.post("/api/v1/trajectories", json={"trajectory_id": "dp"})).status_code == 201
    before = await snapshot(c)
    for n in (64, 254, 300, 900):  # with the object around it, the field is n + 1 levels deep
        cases = [
            ("/api/v1/steps", '{"steps": [{"trajectory_id": "dp", "step_index": 0, "metadata": {"a": %s}}]}'),
            ("/api/v1/steps", '{"steps": [{"trajectory_id": "dp", "step_index": 0, "messages": [{"c": %s}]}]}'),
            ("/api/v1/steps", '{"steps": [{"trajectory_id": "dp", "step_index": 0, "response": {"x": %s}}]}'),
            ("/api/v1/steps", '{"steps": [{"trajectory_id": "dp", "step_index": 0, "sampling": {"x": %s}}]}'),
            ("/api/v1/trajectories", '{"metadata": {"a": %s}}'),
            ("/api/v1/groups", '{"n": 1, "metadata": {"a": %s}}'),
            ("/api/v1/trajectories/dp/complete", '{"metadata": {"a": %s}}'),
            ("/api/v1/rewards", '{"trajectory_id": "dp", "name": "r", "value": 1, "details": {"a": %s}}'),
            ("/api/v1/feedback", '{"trajectory_id": "dp", "kind": "comment", "value": %s}'),
        ]
        for path, template in cases:
            value = nested(n) if "feedback" not in path else nested(n + 1)
            r = await post_raw(c, path, template % value)
            assert r.status_code == 422, (n, path, r.text[:300])
            assert "nested deeper than 64" in error_of(r)["message"], (n, path)
    assert await snapshot(c) == before
    assert (await c.get("/api/v1/trajectories/dp")).json()["status"] == "open"
    meta = {"a": orjson.loads(nested(63))}  # 64 levels: the limit, stored and read back
    messages = [{"role": "user", "content": orjson.loads(nested(62))}]
    r = await c.post("/api/v1/steps", json={"steps": [step("dp", 0, [1], [2], metadata=meta, messages=messages)]})
    assert r.status_code == 200, r.text
    got = (await c.get(f"/api/v1/steps/{r.json()['step_ids'][0]}")).json()
    assert got["metadata"] == meta and got["messages"] == messages


async def test_storage_refuses_what_validation_would(tmp_path: Path) -> None:
    """15.9: a store given JSON too deep to write (a caller that skipped validation) raises a 422-class error,
    not orjson's TypeError (a 500)."""
    from steplake.errors import SteplakeError
    from steplake.store.codec import dumps

    with pytest.raises(SteplakeError) as e:
        dumps({"a": orjson.loads(nested(900))})
    assert e.value.status == 422 and "too deeply" in e.value.message


async def test_non_finite_numbers_are_422(any_client: httpx.AsyncClient) -> None:
    """12.9: "Infinity", "-Infinity", "1e309", "NaN" (strings or bare) as rewards, step rewards, logprobs,
    reward values (NaN was a 500 IntegrityError), completion rewards, ratings and filters."""
    c = any_client
    assert (await c.post("/api/v1/trajectories", json={"trajectory_id": "nf"})).status_code == 201
    before = await snapshot(c)
    templates = [
        ("/api/v1/steps", '{"steps": [{"trajectory_id": "nf", "step_index": 0, "reward": %s}]}'),
        ("/api/v1/steps", '{"steps": [{"trajectory_id": "nf", "step_index": 0, "response_ids": [5],'
                          ' "response_logprobs": [%s]}]}'),
        ("/api/v1/steps", '{"steps": [{"trajectory_id": "nf", "step_index": 0, "latency_ms": %s}]}'),
        ("/api/v1/rewards", '{"trajectory_id": "nf", "name": "r", "value": %s}'),
        ("/api/v1/trajectories/nf/complete", '{"reward": %s}'),
        ("/api/v1/feedback", '{"trajectory_id": "nf", "kind": "rating", "value": %s}'),
        ("/api/v1/batches", '{"filters": {"min_reward": %s}, "dry_run": true}'),
    ]
    for bad in ('"Infinity"', '"-Infinity"', '"1e309"', '"NaN"', '"nan"', "1e309", "-1e309"):
        for path, template in templates:
            r = await post_raw(c, path, template % bad)
            assert r.status_code == 422, (bad, path, r.text[:300])
    assert await snapshot(c) == before
    t = (await c.get("/api/v1/trajectories/nf")).json()
    assert t["status"] == "open" and t["reward"] is None
    assert (await c.get("/api/v1/rewards", params={"trajectory_id": "nf"})).json()["items"] == []


NUL_CASES: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/trajectories?group_id=%00", None),
    ("GET", "/api/v1/trajectories?channel=a%00", None),
    ("GET", "/api/v1/trajectories?quality=%00", None),
    ("GET", "/api/v1/trajectories?agent=%00", None),
    ("GET", "/api/v1/steps?trajectory_id=%00", None),
    ("GET", "/api/v1/steps/%00", None),
    ("GET", "/api/v1/trajectories/a%00b", None),
    ("DELETE", "/api/v1/trajectories/a%00b", None),
    ("POST", "/api/v1/trajectories/a%00b/complete", {}),
    ("GET", "/api/v1/groups/%00", None),
    ("GET", "/api/v1/batches/%00", None),
    ("POST", "/api/v1/batches/%00/ack", None),
    ("GET", "/api/v1/rewards?trajectory_id=%00", None),
    ("GET", "/api/v1/feedback?step_id=%00", None),
    ("GET", "/api/v1/curation/history?target_id=%00", None),
    ("GET", "/api/v1/dashboard/tokens?step_id=%00", None),
    ("DELETE", "/api/v1/keys/%00", None),
    ("POST", "/api/v1/exports", {"format": "jsonl", "channel": "c\u0000"}),
    ("POST", "/api/v1/exports", {"format": "jsonl", "filters": {"agent": "a\u0000"}}),
    ("POST", "/api/v1/curation", {"filter": {"agent": "a\u0000"}, "quality": "good"}),
    ("POST", "/api/v1/curation", {"filter": {"quality": "\u0000"}, "quality": "good"}),
    ("POST", "/api/v1/dashboard/curate", {"filters": {"agent": "a\u0000"}, "quality": "good"}),
    ("POST", "/api/v1/batches", {"filters": {"quality_in": ["\u0000"]}, "dry_run": True}),
    ("POST", "/api/v1/rewards/run", {"trajectory_ids": ["a\u0000"]}),
    ("POST", "/api/v1/rewards/run", {"filter": {"agent": "a\u0000"}}),
]


async def test_nul_in_ids_names_and_filters_is_422_on_every_backend(any_client: httpx.AsyncClient) -> None:
    """15.4: PostgreSQL answered 500 DataError (and reset the connection) where SQLite answered 200/404."""
    c = any_client
    assert (await c.post("/api/v1/trajectories", json={"trajectory_id": "ok"})).status_code == 201
    before = await snapshot(c)
    for method, path, body in NUL_CASES:
        r = await c.request(method, path, json=body) if body is not None else await c.request(method, path)
        assert r.status_code == 422, (method, path, r.status_code, r.text[:300])
        assert error_of(r)["type"] == "invalid_request_error"
        assert (await c.get("/api/v1/trajectories/ok")).status_code == 200  # the server is fine afterwards
    assert await snapshot(c) == before


async def test_values_a_database_refuses_are_422_not_500(tmp_path: Path) -> None:
    """15.4: whatever gets past validation and is refused by the database (psycopg's DataError: a NUL in text,
    a number beyond a column) or by SQLite's driver (OverflowError) is answered 422 in the caller's shape."""
    import psycopg

    app = make_app(tmp_path)

    async def refused_by_postgres() -> None:
        raise psycopg.errors.UntranslatableCharacter("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    async def refused_by_sqlite() -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    app.add_api_route("/api/v1/test-pg-refusal", refused_by_postgres)
    app.add_api_route("/v1/messages/test-sqlite-refusal", refused_by_sqlite)
    async with asgi_client(app) as c:
        r = await c.get("/api/v1/test-pg-refusal")
        assert r.status_code == 422 and error_of(r)["code"] == "invalid_value" and "NUL" in error_of(r)["message"]
        r = await c.get("/v1/messages/test-sqlite-refusal")
        assert r.status_code == 422 and r.json()["type"] == "error", r.text


async def test_one_acceptance_rule_for_both_backends(any_client: httpx.AsyncClient) -> None:
    """15.6: PostgreSQL refused what SQLite stored. The rule: NUL is refused (422) in ids, names, labels, notes,
    ``finish_reason``, ``model`` and anywhere in metadata; it is stored as sent inside free JSON (messages,
    reward details, feedback values); ``step_index`` goes up to 2^31-2."""
    c = any_client
    refused: list[tuple[str, Any]] = [
        ("/api/v1/steps", {"steps": [step("r1", 0, [1], [2], finish_reason="stop\u0000")]}),
        ("/api/v1/steps", {"steps": [step("r1", 0, [1], [2], model="m\u0000")]}),
        ("/api/v1/steps", {"steps": [step("r1", 0, [1], [2], metadata={"agent": "a\u0000"})]}),
        ("/api/v1/steps", {"steps": [step("r1", 0, [1], [2], metadata={"task": {"t": ["x\u0000"]}})]}),
        ("/api/v1/steps", {"steps": [step("r1", 0, [1], [2], metadata={"k\u0000": 1})]}),
        ("/api/v1/steps", {"steps": [step("r1", 2**31 - 1, [1], [2])]}),
        ("/api/v1/trajectories", {"trajectory_id": "r2", "metadata": {"agent": "a\u0000b"}}),
        ("/api/v1/groups", {"n": 1, "metadata": {"x": "\u0000"}}),
        ("/api/v1/policy", {"version": 7, "note": "n\u0000"}),
        ("/api/v1/policy", {"version": 7, "weights_path": "/w\u0000"}),
        ("/api/v1/rewards", {"trajectory_id": "r1", "name": "r", "value": 1, "version": "v\u0000"}),
        ("/api/v1/feedback", {"trajectory_id": "r1", "kind": "comment", "value": "v", "author": "a\u0000"}),
        ("/api/v1/feedback", {"trajectory_id": "r1", "kind": "comment", "value": "v", "comment": "c\u0000"}),
        ("/api/v1/curation", {"trajectory_ids": ["r1"], "note": "n\u0000"}),
        ("/api/v1/curation", {"trajectory_ids": ["r1"], "quality": "q\u0000"}),
        ("/api/v1/curation", {"trajectory_ids": ["r1"], "tags_add": ["t\u0000"]}),
        ("/api/v1/curation", {"trajectory_ids": ["r1"], "quality": "good", "reviewer": "r\u0000"}),
    ]
    before = await snapshot(c)
    for path, body in refused:
        r = await c.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text[:300])
    assert await snapshot(c) == before
    assert (await c.get("/api/v1/policy")).json().get("version") != 7
    text = "tool said \u0000 here"
    s = step("r1", 2**31 - 2, [1], [2], messages=[{"role": "user", "content": text}])
    r = await c.post("/api/v1/steps", json={"steps": [s]})
    assert r.status_code == 200, r.text
    got = (await c.get(f"/api/v1/steps/{r.json()['step_ids'][0]}")).json()
    assert got["step_index"] == 2**31 - 2 and got["messages"][0]["content"] == text
    r = await c.post("/api/v1/rewards", json={"trajectory_id": "r1", "name": "r", "value": 1, "details": {"x": text}})
    assert r.status_code == 200 and r.json()["details"] == {"x": text}, r.text
    r = await c.post("/api/v1/feedback", json={"trajectory_id": "r1", "kind": "correction", "value": text})
    assert r.status_code == 200 and r.json()["value"] == text, r.text
    r = await c.post("/api/v1/keys", json={"scope": "agent", "name": "k\u0000"})  # last: a key would lock us out
    assert r.status_code == 422, r.text
    assert (await c.get("/api/v1/keys")).json()["items"] == []
