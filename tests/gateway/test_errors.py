"""Malformed requests and upstream faults: protocol-shaped errors, a healthy gateway, no half-written step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import free_port
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.gateway.test_openai import sse

CHAT = "/v1/chat/completions"


def user(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"model": "m"}', "'messages' is required"),
    (b'{"model": "m", "messages": []}', "non-empty"),
    (b'{"model": "m", "messages": "hi"}', "non-empty array"),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "role"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "content"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}', "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}', "tools"),
])
async def test_malformed_chat_requests_get_openai_400(harness: Harness, body: bytes, needle: str) -> None:
    r = await harness.client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    assert await harness.steps() == []


@pytest.mark.parametrize("body", [
    b"{oops", b'{"model": "m", "max_tokens": 5}', b'{"model": "m", "max_tokens": 5, "messages": []}',
    b'{"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}',
])
async def test_malformed_messages_requests_get_anthropic_400(harness: Harness, body: bytes) -> None:
    r = await harness.client.post("/v1/messages", content=body)
    assert r.status_code == 400
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"


async def test_bad_completions_and_headers(harness: Harness) -> None:
    r = await harness.client.post("/v1/completions", json={"model": "m", "prompt": [1, "a"]})
    assert r.status_code == 400
    r = await harness.client.post(CHAT, json=user("x"), headers={"X-Steplake-Metadata": "[1]"})
    assert r.status_code == 400 and "Metadata" in r.json()["error"]["message"]
    r = await harness.client.post(CHAT, json=user("x"), headers={"X-Steplake-Trajectory": "bad id!"})
    assert r.status_code == 400
    r = await harness.client.post("/api/v1/generate", json={"prompt_ids": "abc"})
    assert r.status_code == 400


@pytest.mark.parametrize("marker,status", [("[[500]]", 500), ("[[429]]", 429)])
async def test_upstream_errors_pass_through_in_both_protocols(harness: Harness, marker: str, status: int) -> None:
    r = await harness.client.post(CHAT, json=user(marker))
    assert r.status_code == status and r.json()["error"]["message"]
    r = await harness.client.post("/v1/messages", json={"model": "m", "max_tokens": 8,
                                                        "messages": [{"role": "user", "content": marker}]})
    assert r.status_code == status and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == ("rate_limit_error" if status == 429 else "api_error")
    r = await harness.client.post(CHAT, json=user("fine"))  # the gateway stays healthy
    assert r.status_code == 200
    assert len(await harness.steps()) == 1


async def test_unreachable_upstream_gives_502(make_harness: Callable[..., Awaitable[Harness]]) -> None:
    h = await make_harness([f"vllm+http://127.0.0.1:{free_port()}"])
    r = await h.client.post(CHAT, json=user("x"))
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    r = await h.client.post("/v1/messages", json={"model": "m", "max_tokens": 8,
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    assert await h.steps() == [] and not await h.gw.ready()


async def test_timeout_gives_504(make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url], upstream_timeout=0.5)
    r = await h.client.post(CHAT, json=user("[[slow]]"))
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert await h.steps() == []


async def test_upstream_killed_mid_stream(harness: Harness) -> None:
    r = await harness.client.post(CHAT, json={**user("[[kill]] a long enough answer"), "stream": True})
    assert r.status_code == 200
    events = sse(r.text)
    assert "[DONE]" not in events and "error" in events[-1]
    r = await harness.client.post("/v1/messages", json={"model": "m", "max_tokens": 64, "stream": True,
                                                        "messages": [{"role": "user", "content": "[[kill]] abcdefgh"}]})
    assert "event: error" in r.text and "message_stop" not in r.text
    assert await harness.steps() == []
    r = await harness.client.post(CHAT, json=user("after"))
    assert r.status_code == 200 and len(await harness.steps()) == 1


async def test_retry_on_another_upstream_and_sticky_routing(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    dead = f"vllm+http://127.0.0.1:{free_port()}"
    h = await make_harness([dead, fake_up.url])
    for i in range(4):
        r = await h.client.post(CHAT, json=user(f"q{i}"), headers={"X-Steplake-Trajectory": f"sticky{i}"})
        assert r.status_code == 200
    steps = await h.steps()
    assert {s["provenance"]["upstream"] for s in steps} == {fake_up.url}
    gw = h.gw
    ups = gw.upstreams.upstreams
    for u in ups:
        u.healthy = True
    picks = {gw.upstreams.candidates("traj-A")[0].root for _ in range(5)}
    assert len(picks) == 1


async def test_capture_failure_never_breaks_the_call(harness: Harness) -> None:
    harness.pool.store.close()  # every capture now fails in the store
    r = await harness.client.post(CHAT, json=user("still answered"))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: still answered"
    await harness.settle()
    assert harness.pool.captures.failed == 1
    harness.pool.store.open()


async def test_upstream_key_from_the_url_is_sent_and_the_agent_key_is_not(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url.replace("http://", "vllm+http://sk-up@")])
    r = await h.client.post(CHAT, json=user("k"), headers={"Authorization": "Bearer agent-key"})
    assert r.status_code == 200 and fake_up.fake.auth == "Bearer sk-up"
    h2 = await make_harness([fake_up.url])
    await h2.client.post(CHAT, json=user("k"), headers={"Authorization": "Bearer agent-key"})
    assert fake_up.fake.auth is None
