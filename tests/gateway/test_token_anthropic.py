"""Anthropic ``/v1/messages`` and forced tool calls on the token path, against the fake vLLM-shaped upstream
(fast): what is sent to ``/v1/completions``, the Anthropic answer, the bridge of the next turn, and the
structured output that forces a call on a ``vllm`` upstream. Streamed answers: tests/vllm/test_token_path.py
(the fake does not stream completions)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from steplake.gateway.forced import forced_call
from steplake.render.generic import TemplateRenderer
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.render.tiny import tiny_tokenizer

Make = Callable[..., Awaitable[Harness]]
SYSTEM = "be brief"
USER = {"role": "user", "content": "hello world"}
CALC = {"name": "calculator", "description": "math",
        "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}},
                         "required": ["expression"]}}
CHAT_CALC = {"type": "function", "function": {"name": "calculator", "description": "math",
                                              "parameters": CALC["input_schema"]}}


@pytest.fixture
def tok_dir(tmp_path: Path) -> str:
    d = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(str(d))
    return str(d)


def events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]


async def messages(h: Harness, tid: str, msgs: list[Any], **kw: Any) -> Any:
    r = await h.client.post(f"/t/{tid}/v1/messages", json={"model": "m", "max_tokens": 32, "system": SYSTEM,
                                                           "messages": msgs, **kw})
    assert r.status_code == 200, r.text
    return events(r.text) if kw.get("stream") else r.json()


async def test_anthropic_messages_take_the_token_path_and_bridge(make_harness: Make, fake_up: FakeUpstreamThread,
                                                                tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    r = TemplateRenderer(tiny_tokenizer())
    out = await messages(h, "t-an", [USER], temperature=0.5, stop_sequences=["\n\n"])
    assert out["type"] == "message" and out["content"] == [{"type": "text", "text": "done0"}]
    assert out["stop_reason"] == "end_turn" and out["usage"]["input_tokens"] > 0
    sent = fake_up.fake.requests[-1]
    chat_msgs = [{"role": "system", "content": SYSTEM}, USER]
    assert sent["prompt"] == r.render(chat_msgs, None) and sent["return_token_ids"] is True
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.5, 32, ["\n\n"])
    msgs = [USER, {"role": "assistant", "content": [{"type": "text", "text": "done0"}]},
            {"role": "user", "content": "again"}]
    await messages(h, "t-an", msgs)
    a, b = await h.steps("t-an")
    assert a["provenance"]["prompt_mode"] == b["provenance"]["prompt_mode"] == "tokens"
    bridge = r.bridge(a["prompt_ids"], a["response_ids"], [{"role": "user", "content": "again"}], None)
    assert fake_up.fake.requests[-1]["prompt"] == b["prompt_ids"] == a["prompt_ids"] + a["response_ids"] + bridge
    assert b["continuity"] == "clean" and b["provenance"]["prompt_build"] == "bridge"


async def test_chat_mode_anthropic_steps_say_so(make_harness: Make, fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"])
    await messages(h, "t-ac", [USER])
    [step] = await h.steps("t-ac")
    assert step["provenance"]["prompt_mode"] == "chat"
    assert step["provenance"]["prompt_mode_reason"] == "--prompt-mode chat"


async def test_a_forced_call_on_vllm_is_constrained_with_structured_outputs(make_harness: Make,
                                                                           fake_up: FakeUpstreamThread,
                                                                           tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    await messages(h, "t-fc", [USER], tools=[CALC], tool_choice={"type": "tool", "name": "calculator"})
    sent = fake_up.fake.requests[-1]
    assert isinstance(sent["prompt"], list) and "tools" not in sent and "tool_choice" not in sent
    tag = json.loads(sent["structured_outputs"]["structural_tag"])
    assert tag["type"] == "structural_tag"
    head, schema, tail = tag["format"]["elements"]
    assert head == {"type": "const_string", "value": '<tool_call>{"name": "calculator", "arguments": '}
    assert schema == {"type": "json_schema", "json_schema": CALC["input_schema"]}
    assert tail == {"type": "const_string", "value": "}</tool_call>"}
    [step] = await h.steps("t-fc")
    assert step["provenance"]["prompt_mode"] == "tokens"
    # "required" (Anthropic "any") over two tools: one of the two calls
    two = [CALC, {**CALC, "name": "search"}]
    await messages(h, "t-fc2", [USER], tools=two, tool_choice={"type": "any"})
    tag = json.loads(fake_up.fake.requests[-1]["structured_outputs"]["structural_tag"])
    assert tag["format"]["type"] == "or"
    assert [e["elements"][0]["value"].split('"')[3] for e in tag["format"]["elements"]] == ["calculator", "search"]


def test_a_renderer_without_a_call_syntax_cannot_force_a_call() -> None:
    r = TemplateRenderer(tiny_tokenizer(), convention="native")
    so, why = forced_call(r, [CHAT_CALC], "required")
    assert so is None and why and "call syntax" in why
    so, why = forced_call(TemplateRenderer(tiny_tokenizer()), [CHAT_CALC],
                          {"type": "function", "function": {"name": "nope"}})
    assert so is None and why and "'nope'" in why
