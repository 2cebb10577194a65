"""Keys and scopes (CONTRACT §5): each scope is refused what it may not use; sessions for the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from steplake.api.auth import required_scopes
from tests.api.helpers import step
from tests.api.servers import asgi_client, make_app

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT_CALLS = [
    ("POST", "/api/v1/trajectories", {"trajectory_id": "ta"}),
    ("POST", "/api/v1/groups", {"n": 1}),
    ("POST", "/api/v1/steps", {"steps": [step("ta", 0, [1], [2], step_id="sa")]}),
    ("POST", "/api/v1/feedback", {"step_id": "sa", "kind": "thumbs", "value": "up"}),
    ("POST", "/api/v1/trajectories/ta/complete", {"reward": 1.0}),
]
TRAINER_CALLS = [
    ("GET", "/api/v1/trajectories", None),
    ("GET", "/api/v1/steps/sa", None),
    ("GET", "/api/v1/stats", None),
    ("GET", "/metrics", None),
    ("POST", "/api/v1/rewards", {"trajectory_id": "ta", "name": "r", "value": 1.0}),
    ("POST", "/api/v1/batches", {"groups": 1, "dry_run": True}),
    ("POST", "/api/v1/policy", {"version": 1}),
]
ADMIN_CALLS = [
    ("POST", "/api/v1/curation", {"trajectory_ids": ["ta"], "quality": "good"}),
    ("GET", "/api/v1/keys", None),
    ("DELETE", "/api/v1/trajectories/nope", None),
]


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with asgi_client(make_app(tmp_path)) as c:
        secrets: dict[str, str] = {}
        for scope in ("admin", "agent", "trainer"):  # the first (admin) bootstraps while the server is open
            headers = {"authorization": f"Bearer {secrets['admin']}"} if secrets else {}
            r = await c.post("/api/v1/keys", json={"scope": scope, "name": scope}, headers=headers)
            assert r.status_code == 201, r.text
            secrets[scope] = r.json()["secret"]
        yield c, secrets


async def call(c: httpx.AsyncClient, method: str, path: str, body: object, key: str | None,
               header: str = "authorization") -> httpx.Response:
    headers = {}
    if key is not None:
        headers = {"authorization": f"Bearer {key}"} if header == "authorization" else {header: key}
    return await c.request(method, path, json=body, headers=headers)


async def test_scope_table() -> None:
    assert required_scopes("GET", "/healthz") is None
    assert required_scopes("POST", "/api/v1/session") is None
    assert required_scopes("GET", "/") is None
    assert required_scopes("POST", "/v1/chat/completions") == {"agent", "admin"}
    assert required_scopes("POST", "/t/abc/v1/messages") == {"agent", "admin"}
    assert required_scopes("POST", "/api/v1/generate") == {"agent", "admin"}
    assert required_scopes("POST", "/api/v1/trajectories/x/complete") == {"agent", "admin"}
    assert required_scopes("GET", "/api/v1/trajectories") == {"trainer", "admin"}
    assert required_scopes("POST", "/api/v1/batches/b1/ack") == {"trainer", "admin"}
    assert required_scopes("POST", "/api/v1/exports") == {"trainer", "admin"}
    assert required_scopes("POST", "/api/v1/curation") == {"admin"}
    assert required_scopes("DELETE", "/api/v1/trajectories/x") == {"admin"}
    assert required_scopes("GET", "/api/v1/keys") == {"admin"}


async def test_open_without_keys(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/trajectories")).status_code == 200
    assert (await client.post("/api/v1/curation", json={"trajectory_ids": ["x"], "quality": "bad"})).status_code == 404
    s = (await client.get("/api/v1/session")).json()
    assert s["keys_required"] is False and s["authenticated"] is True


async def test_each_scope(keyed: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    c, keys = keyed
    for method, path, body in AGENT_CALLS:
        assert (await call(c, method, path, body, keys["agent"])).status_code < 400, path
    for method, path, body in TRAINER_CALLS:
        assert (await call(c, method, path, body, keys["trainer"])).status_code < 400, path
    for method, path, body in ADMIN_CALLS:
        assert (await call(c, method, path, body, keys["admin"])).status_code in (200, 404), path
    for scope, allowed in (("agent", AGENT_CALLS), ("trainer", TRAINER_CALLS)):
        for method, path, body in AGENT_CALLS + TRAINER_CALLS + ADMIN_CALLS:
            if (method, path, body) in allowed:
                continue
            r = await call(c, method, path, body, keys[scope])
            assert r.status_code == 403, (scope, method, path, r.status_code)
            err = r.json()["error"]
            assert err["type"] == "permission_error" and scope in err["message"]
    r = await call(c, "POST", "/t/ta/v1/messages", {}, keys["trainer"])
    assert r.status_code == 403 and r.json()["type"] == "error"  # Anthropic shape on /v1/messages


async def test_missing_bad_and_revoked_keys(keyed: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    c, keys = keyed
    for key in (None, "nope", ""):
        r = await call(c, "GET", "/api/v1/trajectories", None, key)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error"
    assert (await c.get("/healthz")).status_code == 200
    assert (await c.get("/readyz")).status_code == 200
    assert (await c.get("/openapi.json")).status_code == 200
    r = await call(c, "GET", "/api/v1/trajectories", None, keys["trainer"], header="x-api-key")
    assert r.status_code == 200
    listed = (await call(c, "GET", "/api/v1/keys", None, keys["admin"])).json()["items"]
    trainer_id = next(k["key_id"] for k in listed if k["scope"] == "trainer")
    assert "secret" not in listed[0] and all("hash" not in str(k) for k in listed)
    r = await call(c, "DELETE", f"/api/v1/keys/{trainer_id}", None, keys["admin"])
    assert r.status_code == 200
    assert (await call(c, "GET", "/api/v1/trajectories", None, keys["trainer"])).status_code == 401


async def test_dashboard_session_cookie(keyed: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    c, keys = keyed
    r = await c.post("/api/v1/session", json={"key": keys["trainer"]})
    assert r.status_code == 403
    assert (await c.post("/api/v1/session", json={"key": "wrong"})).status_code == 401
    r = await c.post("/api/v1/session", json={"key": keys["admin"]})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "steplake_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
        "Strict", "strict")
    assert (await c.get("/api/v1/trajectories")).status_code == 200  # the client keeps the cookie
    assert (await c.post("/api/v1/curation", json={"trajectory_ids": ["x"], "quality": "bad"})).status_code == 404
    assert (await c.get("/api/v1/session")).json()["authenticated"] is True
    token = c.cookies.get("steplake_session")
    assert (await c.delete("/api/v1/session")).status_code == 200
    c.cookies.set("steplake_session", token or "")
    r = await c.get("/api/v1/trajectories")
    assert r.status_code == 401
    c.cookies.clear()
    assert (await c.get("/api/v1/trajectories")).status_code == 401
