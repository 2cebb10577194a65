"""Hostile input and hostile upstreams at the gateway: a call steplake cannot record is refused with a 400 in the
agent's protocol before it is forwarded (never answered and dropped), on SQLite and PostgreSQL alike; an upstream
answer of the wrong shape is a 502 (or the stream's error event) and a retry still joins its trajectory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from steplake.config import Settings
from steplake.gateway import Gateway
from steplake.pool.pool import Pool
from tests.conftest import BACKENDS, make_store
from tests.gateway.conftest import Harness, build_app
from tests.gateway.fake_upstream import FakeUpstreamThread

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ALL_BACKENDS = [pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]
TOOLS = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]


def deep(n: int) -> Any:
    """``n`` nested arrays."""
    return orjson.loads(b"[" * n + b"]" * n)


@pytest_asyncio.fixture(params=ALL_BACKENDS, loop_scope="function")
async def gw_any(request: pytest.FixtureRequest, tmp_path: Path,
                 fake_up: FakeUpstreamThread) -> AsyncIterator[Harness]:
    """The gateway on each backend (the conftest harness is SQLite only)."""
    settings = Settings(upstream=[fake_up.url], db=str(tmp_path / "pool.db"))
    pool = Pool(make_store(request.param, tmp_path), idle_timeout=settings.idle_timeout, sweep_interval=3600,
                event_poll_interval=3600)
    await pool.start()
    gw = Gateway(settings, pool, health_interval=0.5, ready_wait=3.0)
    await gw.start()
    app = build_app(gw)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30)
    try:
        yield Harness(app, gw, pool, client)
    finally:
        await client.aclose()
        await gw.stop()
        await pool.stop()


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def anthropic(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": content}], **extra}


async def assert_refused(h: Harness, fake: FakeUpstreamThread, path: str, body: dict[str, Any],
                         headers: dict[str, str] | None = None, fragment: str = "") -> None:
    """A 400 in the path's protocol; the upstream never saw the call and nothing was stored."""
    before = len(fake.fake.requests)
    r = await h.client.post(path, json=body, headers=headers or {})
    assert r.status_code == 400, (path, body, r.text[:300])
    data = r.json()
    if path.endswith(MESSAGES):
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
        message = data["error"]["message"]
    else:
        assert data["error"]["type"] == "invalid_request_error", data
        message = data["error"]["message"]
    assert fragment in message, message
    assert len(fake.fake.requests) == before
    assert await h.steps() == []


async def test_calls_steplake_cannot_record_are_refused_before_forwarding(
        gw_any: Harness, fake_up: FakeUpstreamThread) -> None:
    """15.5: a NUL in ``model`` (PostgreSQL answered 200 and stored nothing), a trajectory id with a trailing
    newline in the path (``$`` matched before it), and the other fields a capture needs."""
    h, f = gw_any, fake_up
    await assert_refused(h, f, CHAT, chat(model="gpt\u0000x"), fragment="NUL")
    await assert_refused(h, f, MESSAGES, anthropic(model="claude\u0000"), fragment="NUL")
    await assert_refused(h, f, "/v1/completions", {"model": "m\u0000", "prompt": "x"}, fragment="NUL")
    await assert_refused(h, f, CHAT, chat(model="m" * 257), fragment="256")
    await assert_refused(h, f, "/t/nl-1%0A/v1/chat/completions", chat(), fragment="not a valid id")
    await assert_refused(h, f, "/t/nl-1%0A/v1/messages", anthropic(), fragment="not a valid id")
    await assert_refused(h, f, "/t/ok-1/g/g-1%0A/v1/chat/completions", chat(), fragment="not a valid id")
    await assert_refused(h, f, CHAT, chat(), {"X-Steplake-Trajectory": "a b"}, "not a valid id")
    await assert_refused(h, f, CHAT, chat(), {"X-Steplake-Metadata": '{"agent": "a\\u0000b"}'}, "NUL")
    await assert_refused(h, f, CHAT, chat(), {"X-Steplake-Metadata": '{"k\\u0000": 1}'}, "NUL")
    await assert_refused(h, f, "/t/" + "t" * 127 + "/v1/chat/completions", chat(n=2), fragment="n=2")
    r = await h.client.post("/api/v1/generate", json={"prompt_ids": [1, 2], "trajectory_id": "wb",
                                                       "channel": "bad channel"})
    assert r.status_code == 400 and "channel" in r.json()["error"]["message"]
    r = await h.client.post("/api/v1/generate", json={"prompt_ids": [1, 2], "trajectory_id": "wb",
                                                       "metadata": {"agent": "\u0000"}})
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    assert f.fake.requests == [] and await h.steps() == []
    # what may be recorded is: a NUL inside message text is stored as it is, on both backends
    r = await h.client.post("/t/nul-ok/v1/chat/completions", json=chat("a\u0000b"))
    assert r.status_code == 200, r.text
    [s] = await h.steps()
    assert s["trajectory_id"] == "nul-ok" and s["messages"][0]["content"] == "a\u0000b"


async def test_deeply_nested_request_fields_are_400(gw_any: Harness, fake_up: FakeUpstreamThread) -> None:
    """12.8/15.9: nesting beyond 64 levels in any request field or in X-Steplake-Metadata is a 400 in the agent's
    protocol (it was a 500 RecursionError, or a capture that failed after the answer); 64 levels are stored."""
    h, f = gw_any, fake_up
    part = {"type": "text", "text": "x", "extra": deep(300)}
    await assert_refused(h, f, CHAT, {"model": "m", "messages": [{"role": "user", "content": [part]}]},
                         fragment="nested deeper than 64")
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"a": deep(900)}}}]
    await assert_refused(h, f, CHAT, chat(tools=tools), fragment="nested deeper than 64")
    await assert_refused(h, f, CHAT, chat(response_format={"type": "json_schema", "x": deep(254)}),
                         fragment="nested deeper than 64")
    await assert_refused(h, f, "/v1/completions", {"model": "m", "prompt": "x", "logit_bias": {"1": deep(100)}},
                         fragment="nested deeper than 64")
    await assert_refused(h, f, MESSAGES, anthropic(metadata={"user_id": deep(300)}), fragment="nested deeper")
    await assert_refused(h, f, CHAT, chat(), {"X-Steplake-Metadata": orjson.dumps({"a": deep(200)}).decode()},
                         "nested deeper than 64")
    r = await h.client.post("/api/v1/generate", json={"prompt_ids": [1], "trajectory_id": "wb",
                                                       "metadata": {"a": deep(300)}})
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]["message"]
    assert f.fake.requests == [] and await h.steps() == []
    meta = {"a": deep(63)}  # 64 levels with the object itself: stored and read back
    r = await h.client.post("/t/deep-ok/v1/chat/completions", json=chat(),
                            headers={"X-Steplake-Metadata": orjson.dumps(meta).decode()})
    assert r.status_code == 200, r.text
    [s] = await h.steps()
    assert s["metadata"] == meta


def sse_payloads(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


@pytest.mark.parametrize(("shape", "stream", "tools"), [
    ("message_str", False, False), ("function_str", False, True), ("function_str", True, True),
    ("delta_list", True, False), ("usage_deep", False, False)])
async def test_answers_of_the_wrong_shape_are_502_and_release_the_claim(
        harness: Harness, fake_up: FakeUpstreamThread, shape: str, stream: bool, tools: bool) -> None:
    """12.10: valid JSON of the wrong shape → 502 (or the stream's error event), not a 500 or a cut stream;
    the retry of the same continuation joins the trajectory of the first turn."""
    h = harness
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "start"}]
    first = await h.client.post(CHAT, json={"model": "m", "messages": msgs})
    assert first.status_code == 200
    msgs += [{"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
             {"role": "user", "content": "next"}]
    body: dict[str, Any] = {"model": "m", "messages": msgs, "stream": stream}
    if tools:
        body.update(tools=TOOLS, tool_choice="required")
    fake_up.fake.wrong_shape.append(shape)
    r = await h.client.post(CHAT, json=body)
    if stream:
        assert r.status_code == 200
        events = sse_payloads(r.text)
        assert "[DONE]" not in events, events
        err = events[-1]["error"]
        assert err["type"] == "upstream_error" and "wrong shape" in err["message"], err
    else:
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["type"] == "upstream_error" and "wrong shape" in err["message"], err
    assert len(await h.steps()) == 1
    retry = await h.client.post(CHAT, json=body)
    assert retry.status_code == 200, retry.text
    assert "[DONE]" in retry.text or not stream
    steps = sorted(await h.steps(), key=lambda s: s["step_index"])
    assert len(steps) == 2
    assert steps[1]["trajectory_id"] == steps[0]["trajectory_id"]
    assert steps[1]["provenance"]["attribution"] == "auto-join"


@pytest.mark.parametrize(("shape", "stream"), [("message_str", False), ("delta_list", True)])
async def test_wrong_shape_on_the_anthropic_path(harness: Harness, fake_up: FakeUpstreamThread, shape: str,
                                                 stream: bool) -> None:
    fake_up.fake.wrong_shape.append(shape)
    r = await harness.client.post(MESSAGES, json=anthropic(stream=stream))
    if stream:
        assert r.status_code == 200
        assert "event: error" in r.text and "wrong shape" in r.text and "message_stop" not in r.text, r.text
    else:
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["type"] == "error" and "wrong shape" in body["error"]["message"]
    assert await harness.steps() == []
    assert (await harness.client.post(MESSAGES, json=anthropic(stream=stream))).status_code == 200
    assert len(await harness.steps()) == 1
