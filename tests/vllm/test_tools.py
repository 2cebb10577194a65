"""Tool calls with vLLM's ``hermes`` parser, ``n`` > 1, and Anthropic ``/v1/messages`` translated onto vLLM.

The tool call is forced with vLLM's structured outputs (an unknown body field the gateway must forward), so
it is deterministic: streamed deltas must reassemble into the non-streamed call, and the stored steps keep
every id vLLM generated (the parser hides ``<tool_call>`` text from the agent, not from the pool)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.vllm.conftest import MODEL, Gateway
from tests.vllm.wire import (
    MESSAGES,
    QUESTION,
    SYSTEM,
    TOOL_QUESTION,
    TOOL_REGEX,
    TOOLS,
    anthropic_client,
    assert_step_matches,
    chat_logprobs,
    direct,
    openai_client,
    tokenize,
    wait_steps,
)
from tests.vllm_server import VllmServer

TOOL_MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": TOOL_QUESTION}]
TOOL_BODY: dict[str, Any] = {"messages": TOOL_MESSAGES, "tools": TOOLS, "max_tokens": 60, "temperature": 0}
# the forced call is 52 ids in float32 (the grammar makes the model spell it in small pieces)
FORCE = {"structured_outputs": {"regex": TOOL_REGEX}}


def reassemble(chunks: list[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Streamed tool-call deltas → [{id, name, arguments}] by index; and the finish reasons seen."""
    calls: dict[int, dict[str, str]] = {}
    finish: list[str] = []
    for c in chunks:
        if not c.choices:
            continue
        if c.choices[0].finish_reason:
            finish.append(c.choices[0].finish_reason)
        for d in c.choices[0].delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += d.id or ""
            if d.function is not None:
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
    return [calls[i] for i in sorted(calls)], finish


def test_forced_tool_call_whole_and_streamed(vllm: VllmServer, gateway: Gateway) -> None:
    client = openai_client(gateway, "tools-whole")
    whole = client.chat.completions.create(model=MODEL, extra_body=FORCE, **TOOL_BODY)
    assert whole.choices[0].finish_reason == "tool_calls" and not whole.choices[0].message.content
    [call] = whole.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "37*3"}

    chunks = list(openai_client(gateway, "tools-stream").chat.completions.create(
        model=MODEL, stream=True, extra_body=FORCE, **TOOL_BODY))
    [streamed], finish = reassemble(chunks)
    assert finish == ["tool_calls"]
    assert (streamed["name"], streamed["arguments"]) == (call.function.name, call.function.arguments)
    assert streamed["id"].startswith("chatcmpl-tool-")

    ref = direct(vllm, "/chat/completions", {**TOOL_BODY, **FORCE})
    choice = ref["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and len(choice["token_ids"]) > 24
    prompt = tokenize(vllm, messages=TOOL_MESSAGES, tools=TOOLS)
    for tid, stream in (("tools-whole", False), ("tools-stream", True)):
        [step] = wait_steps(gateway, tid)
        assert step["finish_reason"] == "tool_calls" and step["provenance"]["stream"] is stream
        [stored] = step["response"]["tool_calls"]
        assert stored["function"] == {"name": "calculator", "arguments": call.function.arguments}
        assert step["tools"] == TOOLS
        assert_step_matches(step, ref["prompt_token_ids"], choice["token_ids"], chat_logprobs(choice))
        assert step["prompt_ids"] == prompt


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_n2_each_choice_stored_with_its_ids(vllm: VllmServer, gateway: Gateway, stream: bool) -> None:
    tid = f"n2-{stream}"
    # vLLM refuses n > 1 with greedy sampling: sample, seeded, and compare with the ids it showed the agent
    body = {"messages": MESSAGES, "max_tokens": 8, "temperature": 1.0, "seed": 11, "n": 2,
            "extra_body": {"return_token_ids": True}}
    client = openai_client(gateway, tid)
    shown: dict[int, list[int]] = {0: [], 1: []}
    if stream:
        for c in client.chat.completions.create(model=MODEL, stream=True, **body):  # type: ignore[call-overload]
            for ch in c.choices:
                shown[ch.index] += (ch.model_extra or {}).get("token_ids") or []
    else:
        answer = client.chat.completions.create(model=MODEL, **body)  # type: ignore[call-overload]
        assert [ch.index for ch in answer.choices] == [0, 1]
        shown = {ch.index: (ch.model_extra or {})["token_ids"] for ch in answer.choices}
    prompt = tokenize(vllm, messages=MESSAGES)
    steps = [wait_steps(gateway, tid), wait_steps(gateway, f"{tid}-1")]  # choice i > 0 → trajectory "{tid}-{i}"
    for i, [step] in enumerate(steps):
        assert step["prompt_ids"] == prompt and step["token_source"] == "upstream"
        assert step["response_ids"] == shown[i] and len(shown[i]) > 0
        assert len(step["response_logprobs"]) == len(shown[i])
        assert step["provenance"]["warnings"] == []
    assert steps[0][0]["group_id"] == steps[1][0]["group_id"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_messages_keep_vllms_ids(vllm: VllmServer, gateway: Gateway, stream: bool) -> None:
    tid = f"anthropic-{stream}"
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 24, "system": SYSTEM, "extra_body": {"temperature": 0},
                          "messages": [{"role": "user", "content": QUESTION}]}
    client = anthropic_client(gateway, tid)
    if stream:
        with client.messages.stream(**kw) as s:
            types = [e.type for e in s]
            message = s.get_final_message()
        assert types[0] == "message_start" and types[-1] == "message_stop" and "content_block_delta" in types
    else:
        message = client.messages.create(**kw)
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"

    ref = direct(vllm, "/chat/completions", {"messages": MESSAGES, "max_tokens": 24, "temperature": 0})
    choice = ref["choices"][0]
    assert message.content[0].text == choice["message"]["content"]
    assert message.usage.input_tokens == len(ref["prompt_token_ids"])
    assert message.usage.output_tokens == len(choice["token_ids"])
    [step] = wait_steps(gateway, tid)
    assert step["provenance"]["protocol"] == "anthropic.messages" and step["provenance"]["stream"] is stream
    assert step["finish_reason"] == "stop"
    assert_step_matches(step, ref["prompt_token_ids"], choice["token_ids"], chat_logprobs(choice))
    assert step["prompt_ids"] == tokenize(vllm, messages=MESSAGES)
