"""Anthropic /v1/messages through the gateway with the real anthropic SDK (fake upstream)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2

from steplake.gateway.anthropic_wire import request_to_chat
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import render

TOOLS = [{"name": "calculator", "description": "math",
          "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}}}]


def sdk(h: Harness, base: str = "http://gw") -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=h.app))
    return anthropic.AsyncAnthropic(base_url=base, api_key="x", http_client=http, max_retries=0)


async def test_messages_whole_and_streamed(harness: Harness) -> None:
    client = sdk(harness)
    msg = await client.messages.create(model="m", max_tokens=64, system="be brief",
                                       messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == len("echo: hello") + 1
    async with client.messages.stream(model="m", max_tokens=64,
                                      messages=[{"role": "user", "content": [{"type": "text", "text": "yo"}]}]) as s:
        kinds = [ev.type async for ev in s]
        final = await s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == "echo: yo" and final.stop_reason == "end_turn"
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert len(steps) == 2
    assert steps[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert steps[0]["prompt_ids"] == render(steps[0]["messages"]) and steps[0]["token_source"] == "upstream"
    assert steps[1]["response_ids"] == [*b"echo: yo", 1]
    assert steps[1]["provenance"]["protocol"] == "anthropic.messages"


async def test_forced_tool_use_whole_and_streamed_then_tool_result(harness: Harness) -> None:
    client = sdk(harness)
    q: list[dict[str, Any]] = [{"role": "user", "content": "What is 37*3?"}]
    forced = {"type": "tool", "name": "calculator"}
    msg = await client.messages.create(model="m", max_tokens=64, messages=q, tools=TOOLS,  # type: ignore[arg-type]
                                       tool_choice=forced)  # type: ignore[arg-type]
    assert msg.stop_reason == "tool_use"
    use = msg.content[0]
    assert use.type == "tool_use" and use.name == "calculator" and use.input == {"expression": "37*3"}
    async with client.messages.stream(model="m", max_tokens=64, tools=TOOLS,  # type: ignore[arg-type]
                                      tool_choice=forced,  # type: ignore[arg-type]
                                      messages=[{"role": "user", "content": "and 2*2?"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"expression": "37*3"}
    assert final.stop_reason == "tool_use"
    nxt = [*q, {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "111"}]}]
    out = await client.messages.create(model="m", max_tokens=64, messages=nxt, tools=TOOLS)  # type: ignore[arg-type]
    assert out.content[0].type == "text"
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert steps[2]["trajectory_id"] == steps[0]["trajectory_id"] != steps[1]["trajectory_id"]
    assert steps[2]["continuity"] == "clean"
    assert steps[2]["messages"][-1] == {"role": "tool", "tool_call_id": use.id, "content": "111"}


async def test_path_attribution_with_anthropic_base_url(harness: Harness) -> None:
    client = sdk(harness, "http://gw/t/anth-1")
    await client.messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    [step] = await harness.steps()
    assert step["trajectory_id"] == "anth-1"


def test_request_translation() -> None:
    chat = request_to_chat({
        "model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "S"}], "stop_sequences": ["END"],
        "tool_choice": {"type": "any"}, "tools": TOOLS, "temperature": 0.2,
        "messages": [{"role": "user", "content": "q"},
                     {"role": "assistant", "content": [{"type": "text", "text": "let me"},
                                                       {"type": "tool_use", "id": "t1", "name": "calculator",
                                                        "input": {"expression": "1"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                   "content": [{"type": "text", "text": "1"}]},
                                                  {"type": "text", "text": "thanks"}]}]})
    assert chat["messages"][0] == {"role": "system", "content": "S"}
    assert chat["messages"][2]["tool_calls"][0]["function"] == {"name": "calculator",
                                                                 "arguments": '{"expression": "1"}'}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "1"}
    assert chat["messages"][4] == {"role": "user", "content": "thanks"}
    assert chat["tool_choice"] == "required" and chat["stop"] == ["END"] and chat["max_tokens"] == 9
    assert chat["tools"][0]["function"]["parameters"]["properties"]
