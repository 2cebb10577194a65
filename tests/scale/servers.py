"""Several ``steplake serve`` processes on one PostgreSQL schema (real processes, real sockets)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.procs import stop_process

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def db_url(schema: str) -> str:
    assert PG_URL
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLAKE_")}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def launch_server(db: str, log: Path, upstream: str = "http://127.0.0.1:9") -> Server:
    """Start ``steplake serve`` on a free port; by default the gateway points at a closed port, so no model
    is loaded (give ``upstream``, e.g. a fake upstream, to proxy calls)."""
    port = free_port()
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "steplake", "serve", "--db", db, "--port", str(port),
                             "--upstream", upstream, "--idle-timeout", "600"],
                            env=_env(), stdout=out, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", proc, log)


def wait_ready(s: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if s.proc.poll() is not None:
            raise RuntimeError(f"steplake serve exited with {s.proc.returncode}: {s.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{s.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            s.proc.kill()
            raise RuntimeError(f"steplake serve did not come up: {s.log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_server(s: Server) -> None:
    stop_process(s.proc)


@contextmanager
def servers_on_one_schema(tmp_path: Path, n: int = 2, upstream: str = "http://127.0.0.1:9"
                          ) -> Iterator[tuple[str, list[Server]]]:
    """Yield (schema, servers); the schema is dropped afterwards."""
    from steplake.store.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = PostgresStore(db_url(schema))
    first.open()  # create the schema once (servers starting together would serialize on it anyway)
    first.close()
    started: list[Server] = []
    try:
        for i in range(n):  # started together: they race on one database, as in production
            started.append(launch_server(db_url(schema), tmp_path / f"server{i}.log", upstream))
        for s in started:
            wait_ready(s)
        yield schema, started
    finally:
        for s in started:
            stop_server(s)
        PostgresStore(db_url(schema)).drop_schema()
