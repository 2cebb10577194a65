"""Cross-site request forgery (issue 12.2) over HTTP: the app through httpx's ASGI transport with the
``Origin``, ``Sec-Fetch-Site`` and ``Content-Type`` a page on another origin sends (the ``Host`` check:
test_hosts.py; the attack from a real browser: tests/dashboard/test_csrf_browser.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import step
from tests.api.servers import asgi_client, make_app

pytestmark = pytest.mark.asyncio(loop_scope="session")

FOREIGN = ["http://evil.example", "http://testserver:8080", "https://testserver:444", "null",
           "http://127.0.0.1:8000"]


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with asgi_client(make_app(tmp_path)) as c:
        r = await c.post("/api/v1/keys", json={"scope": "admin", "name": "admin"})
        assert r.status_code == 201, r.text
        yield c, r.json()["secret"]


async def keys_of(c: httpx.AsyncClient, secret: str | None = None) -> list[str]:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    r = await c.get("/api/v1/keys", headers=headers)
    assert r.status_code == 200, r.text
    return [k["key_id"] for k in r.json()["items"]]


@pytest.mark.parametrize("origin", FOREIGN)
async def test_foreign_origin_is_refused_on_an_open_server(client: httpx.AsyncClient, origin: str) -> None:
    r = await client.post("/api/v1/keys", json={"scope": "admin"}, headers={"origin": origin})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "foreign_origin" and "origin" in err["message"] and err["type"] == "permission_error"
    r = await client.post("/api/v1/policy", json={"version": 777}, headers={"origin": origin})
    assert r.status_code == 403
    assert await keys_of(client) == []
    assert (await client.get("/api/v1/policy")).json().get("version") in (None, 0)
    assert (await client.get("/api/v1/stats", headers={"origin": origin})).status_code == 200  # reads are fine


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
async def test_cross_and_same_site_fetches_are_refused(client: httpx.AsyncClient, site: str) -> None:
    for method, path, body in (("POST", "/api/v1/keys", {"scope": "admin"}),
                               ("POST", "/api/v1/curation", {"filter": {}, "quality": "bad"}),
                               ("DELETE", "/api/v1/trajectories/x", None),
                               ("POST", "/v1/chat/completions", {"model": "m", "messages": []})):
        r = await client.request(method, path, json=body, headers={"sec-fetch-site": site})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "cross_site_request"
    r = await client.post("/v1/messages", json={}, headers={"sec-fetch-site": site})
    assert r.status_code == 403 and r.json()["type"] == "error"  # Anthropic shape
    assert r.json()["error"]["type"] == "permission_error"
    assert await keys_of(client) == []


async def test_keys_and_cookies_do_not_bypass_the_check(keyed: tuple[httpx.AsyncClient, str]) -> None:
    c, secret = keyed
    before = await keys_of(c, secret)
    auth = {"authorization": f"Bearer {secret}"}
    r = await c.post("/api/v1/keys", json={"scope": "admin"}, headers={**auth, "origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "foreign_origin"
    assert (await c.post("/api/v1/session", json={"key": secret})).status_code == 200  # dashboard cookie
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "same-site"},
                    {"origin": "http://testserver", "sec-fetch-site": "cross-site"}):
        r = await c.post("/api/v1/keys", json={"scope": "admin"}, headers=headers)
        assert r.status_code == 403, r.text
    assert await keys_of(c) == before  # the cookie still signs in reads
    own = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}  # the dashboard's own page
    r = await c.post("/api/v1/keys", json={"scope": "agent"}, headers=own)
    assert r.status_code == 201, r.text
    assert len(await keys_of(c)) == len(before) + 1


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=xyz", "Text/Plain"])
async def test_form_like_bodies_get_415_on_json_routes(client: httpx.AsyncClient, content_type: str) -> None:
    body = json.dumps({"steps": [step("t415", 0, [1], [2])]})
    for path in ("/api/v1/steps", "/api/v1/keys", "/v1/chat/completions", "/t/t415/v1/chat/completions"):
        r = await client.post(path, content=body, headers={"content-type": content_type})
        assert r.status_code == 415, (path, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == "unsupported_media_type" and "application/json" in err["message"]
    r = await client.post("/v1/messages", content="{}", headers={"content-type": content_type})
    assert r.status_code == 415 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert (await client.get("/api/v1/trajectories")).json()["items"] == []
    assert await keys_of(client) == []


async def test_agents_and_sdks_keep_working(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/steps", json={"steps": [step("tok", 0, [1], [2])]})
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/steps", content=json.dumps({"steps": [step("tok", 1, [1, 2], [3])]}))
    assert r.status_code == 200, r.text  # no Content-Type at all: still JSON
    r = await client.post("/api/v1/trajectories/tok/complete", json={"reward": 1.0},
                          headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/policy", json={"version": 3}, headers={"sec-fetch-site": "none"})
    assert r.status_code == 200, r.text


async def test_public_url_origin_is_own(tmp_path: Path) -> None:
    app = make_app(tmp_path, public_url="https://steplake.example/")
    async with asgi_client(app) as c:
        r = await c.post("/api/v1/policy", json={"version": 1}, headers={"origin": "https://steplake.example"})
        assert r.status_code == 200, r.text
        r = await c.post("/api/v1/policy", json={"version": 2}, headers={"origin": "http://steplake.example"})
        assert r.status_code == 403
