"""A client that goes away mid-stream: the upstream call is dropped and no step is stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steplake.app import create_app
from steplake.config import Settings
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.procs import serve_app


@pytest.fixture
def server(tmp_path: Path, fake_up: FakeUpstreamThread) -> Iterator[str]:
    port = free_port()
    settings = Settings(port=port, db=str(tmp_path / "pool.db"), upstream=[fake_up.url])
    with serve_app(create_app(settings), port) as url:
        yield url


def test_client_disconnect_mid_stream_stores_nothing(server: str) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "[[drip]] slowly please"}]}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=10) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    time.sleep(2.0)  # the rest of the upstream answer would have arrived by now
    assert httpx.get(f"{server}/api/v1/steps").json()["items"] == []
    r2 = httpx.post(f"{server}/v1/chat/completions", json={**body, "stream": False}, timeout=10)
    assert r2.status_code == 200
    for _ in range(100):
        if httpx.get(f"{server}/api/v1/steps").json()["items"]:
            break
        time.sleep(0.05)
    assert len(httpx.get(f"{server}/api/v1/steps").json()["items"]) == 1
