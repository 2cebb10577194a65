"""The model server over HTTP (one shared subprocess: fixture ``model_server``), vLLM-compatible wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from steplake.model.testing import non_canonical_sample, reencodes_differently

pytestmark = pytest.mark.slow

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression",
                                         "parameters": {"type": "object", "properties": {
                                             "expression": {"type": "string"}}, "required": ["expression"]}}}
HI = [{"role": "user", "content": "What is the capital of France?"}]
MATH = [{"role": "user", "content": "What is 37*3?"}]


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=300, max_retries=0)


def post(url: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=300)


def sse_events(url: str, path: str, body: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    with httpx.stream("POST", url + path, json=body, timeout=300) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    assert events[-1] == "[DONE]"
    return events[:-1]


def test_chat_via_sdk_reports_exact_ids_and_logprobs(model_server: str) -> None:
    resp = sdk(model_server).chat.completions.create(
        model="whatever", messages=HI, max_tokens=16, temperature=0, logprobs=True, top_logprobs=2,  # type: ignore[arg-type]
        extra_body={"return_token_ids": True})
    choice = resp.choices[0]
    token_ids = choice.model_extra["token_ids"]  # type: ignore[index]
    prompt_ids = resp.model_extra["prompt_token_ids"]  # type: ignore[index]
    assert resp.model == "smollm2-135m-instruct" and resp.usage is not None
    assert len(token_ids) == resp.usage.completion_tokens and len(prompt_ids) == resp.usage.prompt_tokens
    assert prompt_ids == post(model_server, "/tokenize", {"messages": HI}).json()["tokens"]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert len(choice.logprobs.content) == len(token_ids)
    assert all(len(e.top_logprobs) == 2 and e.bytes is not None for e in choice.logprobs.content)
    if choice.finish_reason == "stop":
        assert token_ids[-1] == 2  # <|im_end|>
    text = post(model_server, "/detokenize", {"tokens": token_ids}).json()["prompt"]
    assert text.replace("<|im_end|>", "") == choice.message.content


def test_streaming_chunks_add_up_to_the_non_streaming_answer(model_server: str) -> None:
    body = {"messages": HI, "max_tokens": 10, "temperature": 0, "return_token_ids": True, "logprobs": True}
    full = post(model_server, "/v1/chat/completions", body).json()
    events = sse_events(model_server, "/v1/chat/completions",
                        {**body, "stream": True, "stream_options": {"include_usage": True}})
    chunks, usage = events[:-1], events[-1]
    assert usage["choices"] == [] and usage["usage"] == full["usage"]
    assert chunks[0]["prompt_token_ids"] == full["prompt_token_ids"]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in events}) == 1
    ids = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    logprobs = [e for c in chunks for e in (c["choices"][0]["logprobs"] or {}).get("content", [])]
    choice = full["choices"][0]
    assert ids == choice["token_ids"] and content == choice["message"]["content"]
    assert [e["logprob"] for e in logprobs] == [e["logprob"] for e in choice["logprobs"]["content"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]


def test_n_choices_with_seed(model_server: str) -> None:
    body = {"messages": HI, "max_tokens": 6, "temperature": 1.5, "seed": 3, "n": 2, "return_token_ids": True}
    first = post(model_server, "/v1/chat/completions", body).json()
    again = post(model_server, "/v1/chat/completions", body).json()
    assert [c["index"] for c in first["choices"]] == [0, 1]
    assert [c["token_ids"] for c in first["choices"]] == [c["token_ids"] for c in again["choices"]]
    assert first["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in first["choices"])


def test_forced_tool_call_is_valid_json(model_server: str) -> None:
    resp = sdk(model_server).chat.completions.create(
        model="m", messages=MATH, tools=[CALC], max_tokens=40, temperature=0.7, seed=1,  # type: ignore[arg-type, list-item]
        tool_choice={"type": "function", "function": {"name": "calculator"}}, extra_body={"return_token_ids": True})
    choice = resp.choices[0]
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "calculator" and calls[0].id.startswith("call_")  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments), dict)  # type: ignore[union-attr]
    assert choice.finish_reason == "stop" and choice.model_extra["token_ids"][-1] == 2  # type: ignore[index]

    events = sse_events(model_server, "/v1/chat/completions", {
        "messages": MATH, "tools": [CALC], "tool_choice": "required", "max_tokens": 40, "temperature": 0.7,
        "seed": 1, "stream": True, "return_token_ids": True, "stream_options": {"include_usage": True}})
    deltas = [d for e in events[:-1] for d in e["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["id"].startswith("call_") and deltas[0]["function"]["name"] == "calculator"
    args = "".join(d["function"].get("arguments", "") for d in deltas)
    assert isinstance(json.loads(args), dict) and {d["index"] for d in deltas} == {0}
    ids = [t for e in events[:-1] for t in e["choices"][0]["token_ids"]]
    assert len(ids) == events[-1]["usage"]["completion_tokens"]
    finish = events[-2]["choices"][0]["finish_reason"]
    assert finish == ("tool_calls" if ids[-1] == 2 else "length")


def test_completions_token_in_and_streaming(model_server: str) -> None:
    prompt = post(model_server, "/tokenize", {"prompt": "The capital of France is"}).json()["tokens"]
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "return_token_ids": True, "logprobs": 1}
    full = post(model_server, "/v1/completions", body).json()
    choice = full["choices"][0]
    assert choice["prompt_token_ids"] == prompt and len(choice["token_ids"]) == full["usage"]["completion_tokens"]
    assert choice["logprobs"]["tokens"] and len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"])
    events = sse_events(model_server, "/v1/completions", {**body, "stream": True})
    assert events[0]["choices"][0]["prompt_token_ids"] == prompt
    assert [t for e in events for t in e["choices"][0]["token_ids"]] == choice["token_ids"]
    assert "".join(e["choices"][0]["text"] for e in events) == choice["text"]
    by_sdk = sdk(model_server).completions.create(model="m", prompt="The capital of France is", max_tokens=6,
                                                  temperature=0)
    assert by_sdk.choices[0].text == choice["text"]


def test_non_canonical_sample_over_http(model_server: str, local_model: Any) -> None:
    messages = [{"role": "user", "content": "Write a poem about the sea."}]
    seed, gen = non_canonical_sample(local_model, local_model.render_chat(messages), max_tokens=24)
    served = post(model_server, "/v1/chat/completions", {"messages": messages, "max_tokens": 24, "temperature": 1.6,
                                                         "seed": seed, "return_token_ids": True}).json()
    ids = served["choices"][0]["token_ids"]
    assert ids == gen.token_ids and reencodes_differently(local_model, gen)
    retokenized = post(model_server, "/tokenize", {"prompt": served["choices"][0]["message"]["content"]}).json()
    assert retokenized["tokens"] != [t for t in ids if t != 2]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": []}),
    ("/v1/chat/completions", {"messages": "hi"}),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 0}),
    ("/v1/completions", {"prompt": [1, 10**7]}),
    ("/v1/completions", {"prompt": []}),
    ("/v1/completions", {"prompt": "x" * 50000}),
    ("/tokenize", {}),
    ("/detokenize", {"tokens": ["a"]}),
])
def test_bad_requests_are_openai_400s(model_server: str, path: str, body: Any) -> None:
    resp = post(model_server, path, body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["message"] and err["type"] and err["code"]


def test_bad_json_and_sdk_errors(model_server: str) -> None:
    resp = httpx.post(model_server + "/v1/chat/completions", content=b"{bad json",
                      headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 400 and "error" in resp.json()
    with pytest.raises(openai.BadRequestError):
        sdk(model_server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                  max_tokens=10**6)


def test_models_health_and_weight_reload(model_server: str, local_model: Any, tmp_path: Path) -> None:
    assert httpx.get(model_server + "/health").json()["status"] == "ok"
    models = sdk(model_server).models.list()
    assert [m.id for m in models.data] == ["smollm2-135m-instruct"]
    bad = post(model_server, "/update_weights_from_disk", {"model_path": str(tmp_path / "missing")})
    assert bad.status_code == 400 and bad.json()["success"] is False
    local_model.save_pretrained(tmp_path / "policy")
    ok = post(model_server, "/update_weights_from_disk", {"model_path": str(tmp_path / "policy")})
    assert ok.status_code == 200 and ok.json()["success"] is True
    resp = post(model_server, "/v1/chat/completions", {"messages": HI, "max_tokens": 4, "temperature": 0})
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]


def test_response_format_json_object(model_server: str) -> None:
    body = {"messages": [{"role": "user", "content": "Give the capital of France as JSON."}], "max_tokens": 30,
            "temperature": 0, "response_format": {"type": "json_object"}, "return_token_ids": True}
    choice = post(model_server, "/v1/chat/completions", body).json()["choices"][0]
    assert choice["message"]["content"].startswith("{")
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict) and choice["token_ids"][-1] == 2
