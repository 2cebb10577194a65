"""OpenAI-compatible endpoints against a fake vLLM-shaped upstream: answers, exact ids, stripping, tools."""

from __future__ import annotations

from typing import Any

import orjson

from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread, render

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "math",
                                           "parameters": {"type": "object",
                                                          "properties": {"expression": {"type": "string"}}}}}]


def sse(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            p = line[6:]
            out.append(p if p == "[DONE]" else orjson.loads(p))
    return out


async def test_chat_answer_is_faithful_and_ids_are_exact(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    r = await harness.client.post("/v1/chat/completions", json={"model": "m", "messages": msgs, "seed": 3,
                                                                "temperature": 0.5, "max_tokens": 64})
    assert r.status_code == 200
    data = r.json()
    # gateway-requested fields are not shown to an agent that did not ask for them
    assert "prompt_token_ids" not in data and "token_ids" not in data["choices"][0]
    assert data["choices"][0]["logprobs"] is None
    # vendor fields pass through
    assert data["system_fingerprint"] == "fp_fake" and "kv_transfer_params" in data
    assert data["choices"][0]["message"]["content"] == "echo: hello"
    sent = fake_up.fake.requests[-1]
    assert sent["return_token_ids"] is True and sent["logprobs"] is True
    [step] = await harness.steps()
    assert step["token_source"] == "upstream"
    assert step["prompt_ids"] == render(msgs)
    assert step["response_ids"] == [*b"echo: hello", 1]  # includes the end-of-turn token
    assert len(step["response_logprobs"]) == len(step["response_ids"])
    assert step["finish_reason"] == "stop" and step["sampling"]["seed"] == 3
    assert step["messages"] == msgs and step["response"]["content"] == "echo: hello"
    prov = step["provenance"]
    assert prov["upstream"] == fake_up.url and prov["upstream_kind"] == "vllm" and prov["warnings"] == []
    assert prov["protocol"] == "openai.chat" and prov["exchange_hash"]


async def test_agent_asking_for_ids_and_logprobs_gets_them(harness: Harness) -> None:
    r = await harness.client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "x"}], "return_token_ids": True, "logprobs": True})
    data = r.json()
    assert data["prompt_token_ids"] and data["choices"][0]["token_ids"]
    assert data["choices"][0]["logprobs"]["content"]


async def test_streaming_with_usage_and_ids(harness: Harness) -> None:
    msgs = [{"role": "user", "content": "stream me please"}]
    r = await harness.client.post("/v1/chat/completions", json={
        "model": "m", "messages": msgs, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("token_ids" not in c["choices"][0] for c in chunks if c["choices"])
    assert all("prompt_token_ids" not in c for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: stream me please"
    [step] = await harness.steps()
    assert step["response_ids"] == [*text.encode(), 1] and step["prompt_ids"] == render(msgs)
    assert step["provenance"]["stream"] is True and step["provenance"]["warnings"] == []


async def test_streaming_without_usage_hides_the_usage_chunk(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    r = await harness.client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True})
    chunks = [c for c in sse(r.text) if c != "[DONE]"]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert fake_up.fake.requests[-1]["stream_options"] == {"include_usage": True}
    [step] = await harness.steps()
    assert step["usage"]["completion_tokens"] == len(step["response_ids"])


async def test_tool_calls_whole_and_streamed_then_tool_result_turn(harness: Harness) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "What is 37*3?"}]
    body = {"model": "m", "messages": msgs, "tools": TOOLS, "tool_choice": "required"}
    r = await harness.client.post("/v1/chat/completions", json=body)
    msg = r.json()["choices"][0]["message"]
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["tool_calls"][0]["function"]["name"] == "calculator"
    other = [{"role": "user", "content": "and 2+2?"}]
    r2 = await harness.client.post("/v1/chat/completions", json={**body, "messages": other, "stream": True})
    chunks = [c for c in sse(r2.text) if c != "[DONE]"]
    deltas = [tc for c in chunks for tc in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert deltas[0]["id"] and deltas[0]["function"]["name"] == "calculator"
    assert "".join(d["function"].get("arguments") or "" for d in deltas) == '{"expression": "37*3"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # the agent answers the tool call; the re-sent history has compact JSON and a dropped content field
    tc = msg["tool_calls"][0]
    resent = {"role": "assistant", "tool_calls": [{**tc, "function": {
        "name": "calculator", "arguments": orjson.dumps(orjson.loads(tc["function"]["arguments"])).decode()}}]}
    msgs2 = [*msgs, resent, {"role": "tool", "tool_call_id": tc["id"], "content": "111"}]
    r3 = await harness.client.post("/v1/chat/completions", json={"model": "m", "messages": msgs2, "tools": TOOLS})
    assert r3.status_code == 200
    steps = await harness.steps()
    assert len(steps) == 3
    first, second, third = sorted(steps, key=lambda s: s["created_at"])
    assert first["response"]["tool_calls"][0]["function"]["name"] == "calculator"
    assert second["response"]["tool_calls"][0]["function"]["arguments"] == '{"expression": "37*3"}'
    assert third["trajectory_id"] == first["trajectory_id"]  # joined by its history
    assert second["trajectory_id"] != first["trajectory_id"]
    assert third["continuity"] == "clean" and third["step_index"] == 1


async def test_n_choices_are_trajectories_of_one_group(harness: Harness) -> None:
    r = await harness.client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "many"}], "n": 3})
    assert [c["message"]["content"] for c in r.json()["choices"]] == ["echo: many", "echo1: many", "echo2: many"]
    steps = await harness.steps()
    assert len({s["trajectory_id"] for s in steps}) == 3 and len({s["group_id"] for s in steps}) == 1
    group = await harness.pool.get_group(steps[0]["group_id"])
    assert group["size"] == 3
    by_text = {s["response"]["content"]: s for s in steps}
    assert by_text["echo1: many"]["response_ids"] == [*b"echo1: many", 1]


async def test_completions_text_and_token_prompts(harness: Harness) -> None:
    r = await harness.client.post("/v1/completions", json={"model": "m", "prompt": "abc", "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "done0"
    assert "token_ids" not in r.json()["choices"][0] and r.json()["choices"][0]["logprobs"] is None
    r = await harness.client.post("/v1/completions", json={"model": "m", "prompt": [5, 6, 7], "max_tokens": 8})
    assert r.status_code == 200
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert steps[0]["prompt_ids"] == list(b"abc") and steps[1]["prompt_ids"] == [5, 6, 7]
    assert steps[1]["response_ids"] == [*b"done0", 1] and steps[1]["provenance"]["protocol"] == "openai.completions"


async def test_models_passthrough(harness: Harness) -> None:
    r = await harness.client.get("/v1/models")
    assert r.json()["data"][0]["id"] == "fake-model"


async def test_missing_and_inconsistent_ids_are_flagged(harness: Harness) -> None:
    await harness.client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "[[noids]]"}]})
    await harness.client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "[[badids]]"}]})
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert steps[0]["token_source"] == "text" and steps[0]["response_ids"] == []
    assert any(w.startswith("ids_missing") for w in steps[0]["provenance"]["warnings"])
    assert steps[1]["token_source"] == "upstream"
    assert any(w.startswith("ids_inconsistent") for w in steps[1]["provenance"]["warnings"])
    st = harness.gw.stats()
    assert st["ids_missing"] == 1 and st["ids_inconsistent"] == 1


async def test_stream_with_a_long_prompt_keeps_all_ids(harness: Harness) -> None:
    long = "x" * 200_000  # the first chunk's prompt_token_ids is far beyond aiohttp's 64 KiB line limit
    msgs = [{"role": "user", "content": long}]
    r = await harness.client.post("/v1/chat/completions", json={"model": "m", "messages": msgs, "stream": True})
    assert sse(r.text)[-1] == "[DONE]"
    [step] = await harness.steps()
    assert step["prompt_ids"] == render(msgs)


def test_llamacpp_style_ids_from_logprob_entries() -> None:
    from steplake.gateway.tokens import AnswerAcc

    acc = AnswerAcc()
    acc.add({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop",
                          "logprobs": {"content": [{"id": 5, "token": "h", "logprob": -0.5},
                                                   {"id": 9, "token": "i", "logprob": -0.25}]}}]}, "message")
    ch = acc.ordered()[0]
    assert ch.token_ids is None and ch.logprob_ids == [5, 9] and ch.logprobs == [-0.5, -0.25]
