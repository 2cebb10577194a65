"""``--capture-sync`` keeps its promise: a call whose capture cannot be stored fails (503 in the agent's
protocol, or the stream's error event instead of its final events), the failure is counted once (the pool's
and the gateway's stats agree), and the agent's retry continues the same trajectory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.gateway.test_openai import sse

CHAT = "/v1/chat/completions"


def chat(*turns: str, stream: bool = False) -> dict[str, Any]:
    roles = ["user", "assistant"]
    msgs = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return {"model": "m", "messages": msgs, "stream": stream}


def anthropic_events(text: str) -> list[tuple[str, Any]]:
    import orjson

    out: list[tuple[str, Any]] = []
    name = ""
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, orjson.loads(line[6:])))
    return out


async def test_a_capture_that_fails_fails_the_call_in_each_protocol(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url], capture_sync=True)
    h.pool.store.close()  # every write fails from now on
    try:
        r = await h.client.post(CHAT, json=chat("plain"))
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "capture_failed" and "could not be recorded" in err["message"]

        r = await h.client.post("/v1/messages", json={"model": "m", "max_tokens": 16,
                                                      "messages": [{"role": "user", "content": "anth"}]})
        assert r.status_code == 503 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "overloaded_error"

        r = await h.client.post(CHAT, json=chat("streamed", stream=True))
        events = sse(r.text)
        assert "[DONE]" not in events and events[-1]["error"]["code"] == "capture_failed"
        assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in events[:-1])

        r = await h.client.post("/v1/messages", json={"model": "m", "max_tokens": 16, "stream": True,
                                                      "messages": [{"role": "user", "content": "anth s"}]})
        names = [n for n, _ in anthropic_events(r.text)]
        assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    finally:
        h.pool.store.open()
    caps = h.pool.captures
    assert caps.failed == 4 and h.gw.stats()["capture"]["failed"] == 4 and caps.committed == 0
    assert h.gw.stats()["capture"]["last_error"] == caps.last_error
    assert await h.steps() == []


async def test_the_retry_of_a_failed_sync_capture_continues_the_trajectory(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url], capture_sync=True)
    first = (await h.client.post(CHAT, json=chat("one"))).json()["choices"][0]["message"]["content"]
    [s0] = await h.steps()
    h.pool.store.close()
    try:
        r = await h.client.post(CHAT, json=chat("one", first, "two"))
        assert r.status_code == 503
    finally:
        h.pool.store.open()
    r = await h.client.post(CHAT, json=chat("one", first, "two"))
    assert r.status_code == 200
    steps = await h.steps(s0["trajectory_id"])
    assert [s["step_index"] for s in steps] == [0, 1] and steps[1]["messages"][-1]["content"] == "two"


async def test_failures_are_counted_once_without_capture_sync(harness: Harness) -> None:
    """Without --capture-sync the call is answered; the store's refusal counts once, in both stats."""
    harness.pool.store.close()
    try:
        assert (await harness.client.post(CHAT, json=chat("async"))).status_code == 200
        await harness.settle()
    finally:
        harness.pool.store.open()
    assert harness.pool.captures.failed == 1 == harness.gw.stats()["capture"]["failed"]
