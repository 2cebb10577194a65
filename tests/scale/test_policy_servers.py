"""Two ``steplake serve`` processes on one PostgreSQL schema: a policy version published through one is
adopted by the other within a second (CONTRACT §2), so its next gateway capture carries it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.scale.servers import PG_URL, Server, servers_on_one_schema

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]


@pytest.fixture
def two(tmp_path: Path) -> Iterator[list[Server]]:
    up = FakeUpstreamThread(free_port()).start()
    try:
        with servers_on_one_schema(tmp_path, 2, upstream=f"vllm+{up.url}") as (_, servers):
            yield servers
    finally:
        up.stop()


def captured_version(url: str, tid: str) -> int:
    r = httpx.post(f"{url}/v1/chat/completions", headers={"X-Steplake-Trajectory": tid}, timeout=30,
                   json={"model": "m", "messages": [{"role": "user", "content": tid}]})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while True:
        steps = httpx.get(f"{url}/api/v1/trajectories/{tid}", timeout=10).json().get("steps") or []
        if steps:
            return int(steps[0]["policy_version"])
        assert time.monotonic() < deadline, "the capture was not stored"
        time.sleep(0.05)


def test_a_version_published_on_one_server_stamps_the_other_servers_next_capture(two: list[Server]) -> None:
    a, b = two
    assert captured_version(b.url, "before") == 0
    for version in (7, 987310):
        r = httpx.post(f"{a.url}/api/v1/policy", json={"version": version}, timeout=30)
        assert r.status_code == 200, r.text
        published = time.monotonic()
        while httpx.get(f"{b.url}/api/v1/stats", timeout=10).json()["policy_version"] != version:
            assert time.monotonic() - published < 1.0, "server B did not adopt the version within 1 s"
            time.sleep(0.02)
        assert captured_version(b.url, f"after-{version}") == version
