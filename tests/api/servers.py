"""Servers for API tests: the app in-process (ASGI transport), uvicorn in a thread (real sockets, SSE),
and ``steplake serve`` as a subprocess. All on a real SqliteStore file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from steplake.app import create_app
from steplake.config import Settings
from steplake.store.sqlite import SqliteStore
from tests.conftest import free_port
from tests.procs import serve_app, stop_process, wait_until_up


def make_app(tmp_path: Path, **settings: object) -> FastAPI:
    s = Settings(db=str(tmp_path / "pool.db"), **settings)  # type: ignore[arg-type]
    return create_app(s, SqliteStore(s.db), gateway=False)


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@contextmanager
def threaded_server(tmp_path: Path, **settings: object) -> Iterator[tuple[str, FastAPI]]:
    """uvicorn serving the app from a thread on a free port; yields (base_url, app)."""
    port = free_port()
    app = make_app(tmp_path, port=port, **settings)
    with serve_app(app, port, ready_path=None, timeout=20) as url:
        yield url, app


def steplake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "steplake", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    for k in list(env):
        if k.startswith("STEPLAKE_"):
            del env[k]
    return env


@contextmanager
def serve_process(db: Path, *extra: str) -> Iterator[str]:
    """``steplake serve`` on a free port (gateway pointed at a closed port: no model is loaded)."""
    port = free_port()
    cmd = steplake_cmd("serve", "--db", str(db), "--port", str(port), "--upstream", "http://127.0.0.1:9",
                       *extra)
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    def alive() -> None:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"steplake serve exited with {proc.returncode}: {out}")
    try:
        wait_until_up(f"{url}/healthz", 30, alive)
        yield url
    finally:
        stop_process(proc)
