"""Responses API: input items → chat messages, reasoning output (whole and streamed), and the token path
(--prompt-mode tokens) against the fake upstream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from steplake.errors import BadRequestError
from steplake.gateway.responses_stream import ResponsesWire
from steplake.gateway.responses_wire import input_to_messages, request_to_chat
from steplake.gateway.tokens import AnswerAcc
from steplake.render.generic import TemplateRenderer
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.gateway.responses_check import RESPONSE, check_stream, sse_events, strict
from tests.render.tiny import tiny_tokenizer

Make = Callable[..., Awaitable[Harness]]


def test_input_items_become_chat_messages() -> None:
    items: list[Any] = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look "},
                                                        {"type": "input_text", "text": "here"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "this:"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me compute.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "calc", "arguments": '{"x": 1}'},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "calc", "arguments": '{"x": 2}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "1"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "2"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "1 and 2"}]},
    ]
    assert input_to_messages(items) == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "look here"},
        {"role": "user", "content": [{"type": "text", "text": "this:"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": "Let me compute.", "reasoning_content": "hmm",
         "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "calc", "arguments": '{"x": 1}'}},
                        {"id": "call_b", "type": "function", "function": {"name": "calc", "arguments": '{"x": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "1"},
        {"role": "tool", "tool_call_id": "call_b", "content": "2"},
        {"role": "assistant", "content": "1 and 2"},
    ]
    chat = request_to_chat({"model": "m", "instructions": "sys", "input": "q", "max_output_tokens": 9,
                            "tools": [{"type": "function", "name": "calc", "parameters": {"type": "object"}}],
                            "tool_choice": {"type": "function", "name": "calc"}, "parallel_tool_calls": False,
                            "stream": True}, [{"role": "user", "content": "before"}])
    assert chat["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "before"},
                                {"role": "user", "content": "q"}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "calc"}}
    assert chat["max_tokens"] == 9 and chat["parallel_tool_calls"] is False
    assert chat["stream_options"] == {"include_usage": True}
    with pytest.raises(BadRequestError, match="computer_call"):
        input_to_messages([{"type": "computer_call", "id": "x"}])


def _wire() -> ResponsesWire:
    return ResponsesWire("resp_st_abc", "abc", 1700000000, "m", {"metadata": {}, "tools": [], "tool_choice": "auto",
                                                                  "parallel_tool_calls": True})


def test_reasoning_is_an_output_item_whole_and_streamed() -> None:
    """An upstream's reasoning_content → a reasoning item before the message, whole and streamed alike."""
    msg = {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4"}
    data = {"id": "c", "model": "m", "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    ans = AnswerAcc()
    ans.add(data, "message")
    whole = _wire().whole(data, ans.ordered())
    strict(RESPONSE, whole)
    assert [o["type"] for o in whole["output"]] == ["reasoning", "message"]
    assert whole["output"][0]["content"] == [{"type": "reasoning_text", "text": "2+2 is 4"}]
    w = _wire()
    out: list[bytes] = []
    for delta in ({"role": "assistant", "reasoning_content": "2+2 "}, {"reasoning_content": "is 4"},
                  {"content": "4"}):
        out += w.chunk({"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    out += w.chunk({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out += w.chunk({"id": "c", "model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    out += w.end()
    events = sse_events(b"".join(out).decode())
    final = check_stream(events)
    assert final["output"] == whole["output"] and final["usage"] == whole["usage"]
    assert [e["type"] for e in events[2:7]] == ["response.output_item.added", "response.content_part.added",
                                                "response.reasoning_text.delta", "response.reasoning_text.delta",
                                                "response.reasoning_text.done"]


@pytest.fixture
def tok_dir(tmp_path: Path) -> str:
    d = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(str(d))
    return str(d)


async def test_responses_take_the_token_path_and_bridge(make_harness: Make, fake_up: FakeUpstreamThread,
                                                        tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    r = TemplateRenderer(tiny_tokenizer())
    one = await h.client.post("/t/t-rs/v1/responses", json={"model": "m", "instructions": "be brief",
                                                            "input": "hello world", "temperature": 0.5})
    assert one.status_code == 200, one.text
    strict(RESPONSE, one.json())
    assert one.json()["output"][0]["content"][0]["text"] == "done0"
    sent = fake_up.fake.requests[-1]
    chat_msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    assert sent["prompt"] == r.render(chat_msgs, None) and sent["temperature"] == 0.5
    two = await h.client.post("/v1/responses", json={"model": "m", "instructions": "be brief", "input": "again",
                                                     "previous_response_id": one.json()["id"]})
    assert two.status_code == 200, two.text
    a, b = await h.steps("t-rs")
    assert a["provenance"]["prompt_mode"] == b["provenance"]["prompt_mode"] == "tokens"
    assert a["step_id"] == one.json()["id"][5:] and b["step_id"] == two.json()["id"][5:]
    bridge = r.bridge(a["prompt_ids"], a["response_ids"], [{"role": "user", "content": "again"}], None)
    assert fake_up.fake.requests[-1]["prompt"] == b["prompt_ids"] == a["prompt_ids"] + a["response_ids"] + bridge
    assert b["continuity"] == "clean" and b["provenance"]["prompt_build"] == "bridge"
