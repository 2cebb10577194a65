"""Revoking the last key never opens a server (issue 12.1), over real HTTP (uvicorn on a 127.0.0.1 port).

A server started with keys keeps requiring them after every key is revoked (through the API or ``steplake keys
revoke`` on the database); a server bound beyond loopback (``--host 0.0.0.0``: here the app is built with that
setting and served on 127.0.0.1, tests listen on loopback only) refuses to revoke its last admin key (409).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from steplake.api.auth import CACHE_SECONDS
from steplake.cli import cli
from steplake.store.sqlite import SqliteStore
from tests.api.servers import threaded_server


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"STEPLAKE_DB": None})


def make_admin(db: Path) -> tuple[str, str]:
    store = SqliteStore(str(db))
    store.open()
    try:
        rec, secret = store.create_key("admin", "first")
    finally:
        store.close()
    return rec.key_id, secret


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def test_last_admin_key_of_a_public_server_cannot_be_revoked(tmp_path: Path) -> None:
    first_id, first = make_admin(tmp_path / "pool.db")
    with threaded_server(tmp_path, host="0.0.0.0") as (url, _app), httpx.Client(base_url=url) as c:
        r = c.delete(f"/api/v1/keys/{first_id}", headers=bearer(first))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "last_admin_key" and "another admin key" in r.json()["error"]["message"]
        assert c.get("/api/v1/keys").status_code == 401  # still closed
        assert c.post("/api/v1/keys", json={"scope": "admin"}).status_code == 401
        agent = c.post("/api/v1/keys", json={"scope": "agent"}, headers=bearer(first)).json()
        assert c.delete(f"/api/v1/keys/{agent['key_id']}", headers=bearer(first)).status_code == 200
        second = c.post("/api/v1/keys", json={"scope": "admin", "name": "second"}, headers=bearer(first)).json()
        assert c.delete(f"/api/v1/keys/{first_id}", headers=bearer(second["secret"])).status_code == 200
        assert c.get("/api/v1/keys", headers=bearer(first)).status_code == 401
        r = c.delete(f"/api/v1/keys/{second['key_id']}", headers=bearer(second["secret"]))
        assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin_key"
        listed = c.get("/api/v1/keys", headers=bearer(second["secret"])).json()["items"]
        assert [k["key_id"] for k in listed if k["revoked_at"] is None] == [second["key_id"]]


def test_a_server_with_keys_keeps_requiring_them(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    key_id, secret = make_admin(db)
    with threaded_server(tmp_path) as (url, _app), httpx.Client(base_url=url) as c:  # loopback: revoking is allowed
        assert c.get("/api/v1/keys").status_code == 401
        assert c.delete(f"/api/v1/keys/{key_id}", headers=bearer(secret)).status_code == 200
        for _ in range(2):  # at once, and after the key cache expired
            assert c.get("/api/v1/keys").status_code == 401
            assert c.get("/api/v1/trajectories").status_code == 401
            r = c.post("/api/v1/keys", json={"scope": "admin"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
            assert c.get("/api/v1/session").json()["keys_required"] is True
            time.sleep(CACHE_SECONDS + 0.2)
        created = run("keys", "create", "--scope", "admin", "--db", str(db))  # the way back in
        assert created.exit_code == 0, created.output
        new_secret = created.stdout.strip().splitlines()[-1]
        assert c.get("/api/v1/keys", headers=bearer(new_secret)).status_code == 200


def test_revoking_every_key_on_the_database_keeps_the_server_closed(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    key_id, secret = make_admin(db)
    with threaded_server(tmp_path, host="0.0.0.0") as (url, _app), httpx.Client(base_url=url) as c:
        assert c.get("/api/v1/trajectories", headers=bearer(secret)).status_code == 200
        assert run("keys", "revoke", key_id, "--db", str(db)).exit_code == 0  # outside the server
        time.sleep(CACHE_SECONDS + 0.2)
        assert c.get("/api/v1/keys").status_code == 401
        assert c.post("/api/v1/keys", json={"scope": "admin"}).status_code == 401
        assert c.get("/api/v1/trajectories", headers=bearer(secret)).status_code == 401
