"""Concurrent requests are decoded together (batched decode steps) and each gets what it gets alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from steplake.model import SamplingParams

pytestmark = pytest.mark.slow

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression",
                                         "parameters": {"type": "object", "properties": {
                                             "expression": {"type": "string"}}, "required": ["expression"]}}}


def _requests() -> list[dict[str, Any]]:
    """8 chat requests of different lengths and sampling settings: greedy, seeded, top_p, a stop string,
    a forced tool call (constrained decoding), a required one."""
    def chat(content: str, **extra: Any) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": content}], "return_token_ids": True, "logprobs": True,
                "max_tokens": 24, **extra}
    return [
        chat("What is the capital of France?", temperature=0),
        chat("Tell me a story about a dragon.", temperature=1.0, seed=11, max_tokens=32),
        chat("Write a haiku about the sea.", temperature=0.8, top_p=0.9, seed=3),
        chat("Name three colors.", temperature=0, stop=["\n"]),
        chat("What is 37*3?", tools=[CALC], tool_choice={"type": "function", "function": {"name": "calculator"}},
             temperature=0.7, seed=1, max_tokens=40),
        chat("Hi", temperature=1.3, seed=5, max_tokens=8),
        chat("Compute 12+30.", tools=[CALC], tool_choice="required", temperature=0, max_tokens=40),
        chat("Why is the sky blue? Answer in detail.", temperature=1.0, seed=8, max_tokens=40),
    ]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def _ids_and_logprobs(answer: dict[str, Any]) -> tuple[list[int], list[float]]:
    choice = answer["choices"][0]
    return choice["token_ids"], [e["logprob"] for e in choice["logprobs"]["content"]]


def test_eight_concurrent_requests_get_what_each_gets_alone(model_server: str, local_model: Any) -> None:
    requests = _requests()
    alone = [_post(model_server, body) for body in requests]
    before = httpx.get(model_server + "/health").json()["batch"]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda body: _post(model_server, body), requests))
    batch = httpx.get(model_server + "/health").json()["batch"]
    assert batch["max_batch"] >= 8 and batch["active"] == 0
    assert batch["largest"] >= 4 and batch["steps"] > before["steps"]  # decoded together, not one by one
    for body, one, many in zip(requests, alone, together, strict=True):
        ids, lps = _ids_and_logprobs(many)
        ids_alone, lps_alone = _ids_and_logprobs(one)
        assert ids == ids_alone and many["choices"][0]["message"]["content"] == one["choices"][0]["message"]["content"]
        assert max(abs(a - b) for a, b in zip(lps, lps_alone, strict=True)) < 1e-3
        recomputed = local_model.compute_logprobs(many["prompt_token_ids"], ids)
        assert max(abs(a - b) for a, b in zip(lps, recomputed, strict=True)) < 1e-3
        if "tool_choice" in body:
            assert [c["function"]["name"] for c in many["choices"][0]["message"]["tool_calls"]] == ["calculator"]


def _wait_for(check: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_waits_for_the_sequences_in_flight(local_model: Any) -> None:
    """A reload swaps the weights only once the sequences in flight are done (they finish on the old
    weights and say so); a request arriving meanwhile waits and runs on the new ones."""
    prompt = local_model.render_chat([{"role": "user", "content": "Tell me a long story."}])
    long = SamplingParams(max_tokens=2000, temperature=0.9, seed=4, ignore_eos=True)
    short = SamplingParams(max_tokens=6, temperature=0)
    reference = local_model.generate(prompt, SamplingParams(max_tokens=12, temperature=0.9, seed=4, ignore_eos=True))
    version = local_model.weights_version
    cancel = threading.Event()
    stream = local_model.stream(prompt, long, cancel=cancel)
    head = [next(stream) for _ in range(12)]  # in flight: ~2000 tokens to go
    assert [p.token_id for p in head] == reference.token_ids
    swap = threading.Thread(target=local_model.reload, args=(local_model.weights_path,))
    swap.start()
    _wait_for(lambda: local_model.batch_stats()["paused"] == 1)  # new weights loaded, waiting for the drain
    late: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: late.update(gen=local_model.generate(prompt, short)))
    waiter.start()
    _wait_for(lambda: local_model.batch_stats()["waiting"] == 1)
    time.sleep(1.0)
    assert local_model.weights_version == version and "gen" not in late  # nothing swapped, the newcomer waits
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "abort" and rest[-1].weights_version == version
    swap.join(300)
    waiter.join(300)
    assert local_model.weights_version == version + 1
    assert late["gen"].weights_version == version + 1 and late["gen"].finish_reason in ("stop", "length")
