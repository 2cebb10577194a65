"""Each step's provenance names the upstream server only when it was identified (``upstream_server``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import free_port
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.upstreams.test_identify import VllmCard


async def test_provenance_names_only_an_identified_server(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    vllm_like = FakeUpstreamThread(free_port())
    vllm_like.fake = VllmCard()
    vllm_like.start()
    try:
        for url, server in ((fake_up.url, None), (vllm_like.url, "vllm fake")):
            h = await make_harness([url])
            r = await h.client.post("/t/ident/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 200, r.text
            await h.settle()
            [step] = [s for s in await h.steps() if s["provenance"]["upstream"] == url]
            assert step["provenance"]["upstream_kind"] == "vllm"
            assert step["provenance"]["upstream_server"] == server
    finally:
        vllm_like.stop()
