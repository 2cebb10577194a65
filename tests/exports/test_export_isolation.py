"""Each pool keeps its exports (issue 12.3): two pools in one folder (two SQLite files, or two PostgreSQL
schemas served from one working directory) never list, read or download each other's exports, and no
answer or served manifest carries the server's absolute paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from steplake.api.exports import exports_root
from steplake.app import create_app
from steplake.config import Settings
from steplake.store.sqlite import SqliteStore
from tests.api.servers import asgi_client
from tests.conftest import BACKENDS, PG_URL, free_port
from tests.exports.test_export_e2e import add_group


def _app(backend: str, tmp_path: Path, name: str) -> FastAPI:
    if backend == "sqlite":
        s = Settings(db=str(tmp_path / f"{name}.db"), port=free_port())
        return create_app(s, SqliteStore(s.db), gateway=False)
    from steplake.store.postgres import PostgresStore

    assert PG_URL
    schema = f"x_{name}_{uuid.uuid4().hex[:8]}"
    return create_app(Settings(db=PG_URL, port=free_port()),
                      PostgresStore(PG_URL, schema=schema, drop_schema_on_close=True), gateway=False)


@asynccontextmanager
async def _two_pools(backend: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient,
                                                                          FastAPI, FastAPI]]:
    a, b = _app(backend, tmp_path, "a"), _app(backend, tmp_path, "b")
    async with AsyncExitStack() as stack:
        http_a = await stack.enter_async_context(asgi_client(a))
        http_b = await stack.enter_async_context(asgi_client(b))
        yield http_a, http_b, a, b


def _no_absolute_path(answer: Any, tmp_path: Path) -> None:
    text = orjson.dumps(answer).decode()
    for p in {str(tmp_path), str(tmp_path.resolve()), str(Path.cwd())}:
        assert p not in text, (p, text)


pytestmark_backends = pytest.mark.parametrize(
    "backend", [pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS])


@pytestmark_backends
async def test_a_pools_exports_are_not_anothers(backend: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # PostgreSQL exports live under the working directory
    async with _two_pools(backend, tmp_path) as (http_a, http_b, app_a, app_b):
        add_group(app_a.state.store, "ga", [1.0, 0.0])
        add_group(app_b.state.store, "gb", [0.5])
        root_a = exports_root(app_a.state.settings, app_a.state.store)
        root_b = exports_root(app_b.state.settings, app_b.state.store)
        assert root_a != root_b and root_a.parent == root_b.parent
        r = await http_a.post("/api/v1/exports", json={"format": "jsonl", "name": "secret", "recipe": "grpo"})
        assert r.status_code == 201, r.text
        made = r.json()
        _no_absolute_path(made, tmp_path)
        assert made["path"] == "secret.jsonl" and made["manifest"]["path"] == "secret.jsonl"
        assert (root_a / "secret" / "secret.jsonl").is_file()
        hf = (await http_a.post("/api/v1/exports", json={"format": "hf", "name": "ds"})).json()
        assert hf["path"] == "ds" and hf["manifest"]["files"] and all("/" not in f for f in hf["manifest"]["files"])
        # B: not listed, not readable, not downloadable, not a source to rebuild from
        assert (await http_b.get("/api/v1/exports")).json() == {"items": [], "next_cursor": None}
        for path in ("/api/v1/exports/secret", "/api/v1/exports/secret/download", "/api/v1/exports/ds/download"):
            r = await http_b.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "export_not_found", path
        r = await http_b.post("/api/v1/exports", json={"format": "jsonl", "from_manifest": "secret"})
        assert r.status_code == 404
        # B's own export of the same name is its own; A still sees only its own
        r = await http_b.post("/api/v1/exports", json={"format": "jsonl", "name": "secret"})
        assert r.status_code == 201
        assert (await http_b.get("/api/v1/exports/secret/download")).text.count("\n") == 2  # gb: 1 traj, 2 steps
        assert (await http_a.get("/api/v1/exports/secret/download")).text.count("\n") == 4
        listed = (await http_a.get("/api/v1/exports")).json()
        assert {e["export_id"] for e in listed["items"]} == {"secret", "ds"}
        # a rebuild records its source relative to itself; every answer and served manifest is path-free
        again = (await http_a.post("/api/v1/exports", json={"format": "parquet", "from_manifest": "secret"})).json()
        assert again["manifest"]["selection"]["source_manifest"] == "../secret/secret.jsonl.manifest.json"
        answers: list[Any] = [listed, again, (await http_a.get("/api/v1/exports")).json()]
        answers += [(await http_a.get(f"/api/v1/exports/{i}")).json() for i in ("secret", "ds", again["export_id"])]
        for ans in answers:
            _no_absolute_path(ans, tmp_path)
        zipped = await http_a.get("/api/v1/exports/ds/download")
        assert zipped.status_code == 200 and str(tmp_path).encode() not in zipped.content


async def test_export_errors_do_not_name_the_servers_folder(tmp_path: Path) -> None:
    async with _two_pools("sqlite", tmp_path) as (http_a, _, app_a, _b):
        add_group(app_a.state.store, "ga", [1.0, 0.0])
        assert (await http_a.post("/api/v1/exports", json={"format": "jsonl", "name": "one"})).status_code == 201
        root = exports_root(app_a.state.settings, app_a.state.store)
        (root / "one" / "one.jsonl.stepids").write_text("tampered\tx\n")
        r = await http_a.post("/api/v1/exports", json={"format": "jsonl", "from_manifest": "one"})
        assert r.status_code == 400, r.text
        assert "cannot read manifest" in r.text and str(tmp_path) not in r.text
