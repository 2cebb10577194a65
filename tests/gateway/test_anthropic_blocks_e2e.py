"""Anthropic content blocks through a real gateway and a fake upstream over TCP, with the anthropic SDK:
what the upstream RECEIVES (image parts, reasoning history, enable_thinking), thinking blocks back (whole
and streamed), and Anthropic-shaped 400s with nothing recorded for what a chat upstream cannot take."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import EOT, FakeUpstream, FakeUpstreamThread, render, text_of
from tests.gateway.test_anthropic import sdk

PNG = "iVBORw0KGgo="
B64_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
DATA_URL = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
REASONING, ANSWER = "6*7 is 42.", "42"


class ThinkingUpstream(FakeUpstream):
    """The fake upstream, plus a reasoning model for ``[[think]]`` (``reasoning_content``) and
    ``[[think-r]]`` (the newer ``reasoning`` field): reasoning first, then the answer, like vLLM/SGLang."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        msgs = body.get("messages") or []
        last = text_of(msgs[-1].get("content")) if msgs else ""
        if "[[think" not in last:
            return await super().chat(request)
        self.requests.append(body)
        key = "reasoning" if "[[think-r]]" in last else "reasoning_content"
        prompt, ids = render(msgs), [*(REASONING + ANSWER).encode(), EOT]
        base = {"id": "chatcmpl-think", "model": body.get("model"), "created": int(time.time())}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(ids), "total_tokens": len(prompt) + len(ids)}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER, key: REASONING},
                      "finish_reason": "stop", "token_ids": ids}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage,
                                      "prompt_token_ids": prompt})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        r = len(REASONING.encode())
        deltas: list[tuple[dict[str, Any], list[int], str | None]] = [
            ({"role": "assistant", "content": ""}, [], None), ({key: REASONING[:3]}, ids[:3], None),
            ({key: REASONING[3:]}, ids[3:r], None), ({"content": ANSWER}, ids[r:], None), ({}, [], "stop")]
        for k, (delta, part, finish) in enumerate(deltas):
            chunk: dict[str, Any] = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish, "token_ids": part}]}
            if k == 0:
                chunk["prompt_token_ids"] = prompt
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
def think_up() -> Iterator[FakeUpstreamThread]:
    t = FakeUpstreamThread(free_port())
    t.fake = ThinkingUpstream()
    t.start()
    yield t
    t.stop()


def sent(up: FakeUpstreamThread) -> dict[str, Any]:
    return up.fake.requests[-1]


async def test_upstream_receives_image_parts_and_tool_result_images(harness: Harness,
                                                                    fake_up: FakeUpstreamThread) -> None:
    client = sdk(harness)
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    first: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "compare"}, B64_IMAGE, url_image]}]
    msg = await client.messages.create(model="m", max_tokens=64, messages=first)
    assert msg.content[0].type == "text"
    parts = sent(fake_up)["messages"][0]["content"]
    assert parts == [{"type": "text", "text": "compare"}, DATA_URL,
                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
    history: list[Any] = [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "done"}, B64_IMAGE]}]}]
    async with client.messages.stream(model="m", max_tokens=64, messages=history) as s:
        await s.get_final_message()
    got = sent(fake_up)["messages"]
    assert got[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}
    assert got[3] == {"role": "user", "content": [DATA_URL]}
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert len(steps) == 2 and steps[0]["messages"][0]["content"][1] == DATA_URL
    assert steps[1]["messages"][3] == {"role": "user", "content": [DATA_URL]}


async def test_thinking_blocks_back_whole_and_streamed_and_reasoning_history_forwarded(
        make_harness: Callable[..., Awaitable[Harness]], think_up: FakeUpstreamThread) -> None:
    h = await make_harness([think_up.url])
    client = sdk(h, "http://gw/t/think-1")
    q: list[Any] = [{"role": "user", "content": "6*7? [[think]]"}]
    msg = await client.messages.create(model="m", max_tokens=64, messages=q,
                                       thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == REASONING and msg.content[0].signature == ""  # type: ignore[union-attr]
    assert msg.content[1].text == ANSWER  # type: ignore[union-attr]
    assert sent(think_up)["chat_template_kwargs"] == {"enable_thinking": True}
    nxt = [*q, {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
           {"role": "user", "content": "again [[think-r]]"}]
    async with client.messages.stream(model="m", max_tokens=64, messages=nxt,
                                      thinking={"type": "disabled"}) as s:
        kinds = [ev.type async for ev in s]
        final = await s.get_final_message()
    assert "thinking" in kinds  # the SDK's thinking_delta event
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == REASONING and final.content[1].text == ANSWER  # type: ignore[union-attr]
    got = sent(think_up)
    assert got["chat_template_kwargs"] == {"enable_thinking": False}
    assert got["messages"][1] == {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    steps = sorted(await h.steps(), key=lambda s: s["created_at"])
    assert [s["trajectory_id"] for s in steps] == ["think-1", "think-1"]
    assert all(s["response"]["reasoning"] == REASONING and s["response"]["content"] == ANSWER for s in steps)
    assert steps[1]["sampling"]["chat_template_kwargs"] == {"enable_thinking": False}


async def test_generic_openai_upstream_gets_no_vendor_fields(make_harness: Callable[..., Awaitable[Harness]],
                                                             think_up: FakeUpstreamThread) -> None:
    h = await make_harness([f"openai+{think_up.url}"])
    hist: list[Any] = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": ""}, {"type": "text", "text": "a"}]},
        {"role": "user", "content": "q2"}]
    await sdk(h).messages.create(model="m", max_tokens=16, messages=hist, thinking={"type": "disabled"})
    got = sent(think_up)
    assert "chat_template_kwargs" not in got and got["messages"][1] == {"role": "assistant", "content": "a"}


@pytest.mark.parametrize("blocks,needle", [
    ([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}}], "PDF"),
    ([{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}], "PDF"),
    ([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}], "source.data"),
    ([{"type": "image", "source": {"type": "base64", "data": PNG}}], "source.media_type"),
    ([{"type": "image", "source": {"type": "url"}}], "source.url"),
    ([{"type": "search_result", "source": "s", "title": "t", "content": []}], "search_result"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_unsupported_or_malformed_blocks_get_anthropic_400_and_no_step(
        harness: Harness, fake_up: FakeUpstreamThread, blocks: list[Any], needle: str, stream: bool) -> None:
    req = {"model": "m", "max_tokens": 16, "stream": stream,
           "messages": [{"role": "user", "content": [{"type": "text", "text": "read this"}, *blocks]}]}
    r = await harness.client.post("/v1/messages", json=req)
    assert r.status_code == 400
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert needle in data["error"]["message"] and "messages.0.content.1" in data["error"]["message"]
    assert fake_up.fake.requests == [] and await harness.steps() == []


async def test_malformed_thinking_param_gets_anthropic_400(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    r = await harness.client.post("/v1/messages", json={"model": "m", "max_tokens": 16, "thinking": {
        "type": "enabled"}, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "budget_tokens" in r.json()["error"]["message"]
    assert fake_up.fake.requests == [] and await harness.steps() == []


@pytest.mark.slow
async def test_embedded_model_answers_400_for_images(make_harness: Callable[..., Awaitable[Harness]],
                                                     model_server: str) -> None:
    h = await make_harness([f"steplake+{model_server}"])
    r = await h.client.post("/v1/messages", json={"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, B64_IMAGE]}]})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "the embedded model is text-only; image inputs need a multimodal upstream" in r.json()["error"]["message"]
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, DATA_URL]}]})
    assert r.status_code == 400 and "text-only" in r.json()["error"]["message"]
    assert await h.steps() == []
