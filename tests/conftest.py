"""Shared fixtures. Store-backed tests run against every Store: SQLite always, PostgreSQL when
STEPLAKE_TEST_PG_URL is set (``.ci/run`` starts a server and sets it; in CI it is required)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_model"] if (Path(__file__).parent / "fixtures_model.py").exists() else []

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])

if os.environ.get("CI") and not PG_URL:  # CI must exercise PostgreSQL; never skip it silently
    raise RuntimeError("CI run without STEPLAKE_TEST_PG_URL: .ci/run must start PostgreSQL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_store(backend: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        from steplake.store.sqlite import SqliteStore

        return SqliteStore(tmp_path / "pool.db")
    from steplake.store.postgres import PostgresStore

    assert PG_URL
    return PostgresStore(PG_URL, schema=f"t_{uuid.uuid4().hex[:12]}", drop_schema_on_close=True)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    s = make_store(request.param, tmp_path)
    s.open()
    try:
        yield s
    finally:
        s.close()
