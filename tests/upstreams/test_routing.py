"""Upstream specs, detection, health and sticky routing against a real (fake) HTTP upstream."""

from __future__ import annotations

from collections import Counter

import pytest

from steplake.errors import ConfigError
from steplake.upstreams import UpstreamClient, UpstreamFailure, UpstreamPool, parse_upstream
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread


def test_parse_specs() -> None:
    u = parse_upstream("sglang+http://h:30000/v1/")
    assert (u.root, u.kind, u.declared) == ("http://h:30000", "sglang", True)
    u = parse_upstream("http://h:8000")
    assert (u.root, u.kind, u.v1) == ("http://h:8000", None, "http://h:8000/v1")
    u = parse_upstream("openai+https://sk-abc%2F1@api.example.com/v1")
    assert u.root == "https://api.example.com" and u.extra["api_key"] == "sk-abc/1"
    assert "sk-abc" not in str(u.as_dict())
    with pytest.raises(ConfigError):
        parse_upstream("ftp://x")
    with pytest.raises(ConfigError):
        parse_upstream("magic+http://x")


async def test_detect_health_loading_and_sticky() -> None:
    fakes = [FakeUpstreamThread(free_port()).start() for _ in range(3)]
    client = UpstreamClient(5.0)
    await client.start()
    try:
        ups = [parse_upstream(f.url) for f in fakes]
        pool = UpstreamPool(ups, client, interval=0.2)
        assert all([await pool.check(u) for u in ups])
        assert {u.kind for u in ups} == {"vllm"} and ups[0].model_id == "fake-model"
        first = Counter(pool.candidates(f"t{i}")[0].root for i in range(300))
        assert len(first) == 3 and min(first.values()) >= 60  # trajectories spread evenly ...
        assert all(pool.candidates("t7")[0] is pool.candidates("t7")[0] for _ in range(5))  # ... and stick
        fakes[0].fake.health_status = 503
        assert not await pool.check(ups[0]) and ups[0].loading
        assert ups[0] not in pool.candidates("x")
        fakes[1].stop()
        assert not await pool.check(ups[1]) and ups[1].last_error
        assert pool.candidates("x")[0] is ups[2]
    finally:
        await client.stop()
        for f in (fakes[0], fakes[2]):
            f.stop()


async def test_call_without_ready_upstream_fails_fast() -> None:
    client = UpstreamClient(5.0)
    await client.start()
    try:
        up = parse_upstream(f"http://127.0.0.1:{free_port()}")
        pool = UpstreamPool([up], client, retries=1, ready_wait=0.5)
        await pool.check(up)

        async def fn(u: object) -> None:
            raise UpstreamFailure(502, "nope", retryable=True)
        with pytest.raises(UpstreamFailure) as e:
            await pool.call("k", fn)
        assert e.value.status == 502
    finally:
        await client.stop()
