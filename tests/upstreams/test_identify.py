"""vLLM is identified positively (``GET /version`` + a model card ``owned_by: "vllm"``), never by elimination."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web

from steplake.upstreams import UpstreamClient, UpstreamPool, parse_upstream
from steplake.upstreams.base import server_of
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstream, FakeUpstreamThread


class VllmCard(FakeUpstream):
    """The fake with vLLM's model card (``owned_by: "vllm"``); ``/version`` as the fake answers it."""

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model",
                                                              "owned_by": "vllm"}]})


class VllmCardNoVersion(VllmCard):
    async def version(self, request: web.Request) -> web.Response:
        return web.Response(status=404)


def serve(fake: FakeUpstream) -> FakeUpstreamThread:
    t = FakeUpstreamThread(free_port())
    t.fake = fake
    return t.start()


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstreamThread]]:
    made: list[FakeUpstreamThread] = []
    yield made
    for f in made:
        f.stop()


@pytest.mark.parametrize(("fake", "prefix", "server"), [
    (VllmCard, "", {"name": "vllm", "version": "fake"}),
    (VllmCard, "vllm+", {"name": "vllm", "version": "fake"}),
    (FakeUpstream, "", None),  # answers /version, but its card is not vLLM's: vLLM-style requests, not "vllm"
    (FakeUpstream, "vllm+", None),  # declared: requests as for vLLM, still not identified as vLLM
    (VllmCardNoVersion, "", None),
], ids=["vllm", "declared-vllm", "other", "declared-other", "no-version"])
async def test_vllm_identified_positively(fakes: list[FakeUpstreamThread], fake: type[FakeUpstream], prefix: str,
                                          server: dict[str, str] | None) -> None:
    fakes.append(serve(fake()))
    client = UpstreamClient(5.0)
    await client.start()
    try:
        up = parse_upstream(prefix + fakes[0].url)
        pool = UpstreamPool([up], client, interval=0.2)
        assert await pool.check(up)
        assert up.kind == "vllm" and up.model_id == "fake-model"  # the wire dialect either way
        assert up.extra["server"] == server
        assert server_of(up) == (f"vllm {server['version']}" if server else None)
        await pool.check(up)  # identified once: not asked again at every health check
        assert up.extra["server"] == server
    finally:
        await client.stop()
