"""Helpers for the tests against a real vLLM: the same request sent straight to vLLM, its ``/tokenize``,
SDK clients pointed at a gateway trajectory, and comparisons of stored steps with vLLM's own answer."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai

from tests.vllm.conftest import MODEL, Gateway
from tests.vllm_server import VllmServer

STOP_ID = 2  # <|im_end|>: SmolLM2's end of turn (and eos)
SYSTEM = "You are a helpful assistant."
QUESTION = "What is 2+2? Answer with a number only."  # greedy: "2 + 2 = 4" then <|im_end|> (8 ids)
MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
# vLLM's structured outputs force the hermes tool-call text, so the call is deterministic
TOOL_REGEX = ('<tool_call>\\n\\{"name": "calculator", "arguments": \\{"expression": "[0-9]{1,3}\\*[0-9]{1,3}"\\}\\}'
              '\\n</tool_call>')
TOOL_QUESTION = "What is 37*3? Use the calculator."
LOGPROB_TOL = 1e-3  # float32 on CPU: same ids, logprobs equal up to batching/prefix-cache rounding


def openai_client(gateway: Gateway, trajectory_id: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/t/{trajectory_id}/v1", api_key="unused", max_retries=0,
                         timeout=120)


def anthropic_client(gateway: Gateway, trajectory_id: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/t/{trajectory_id}", api_key="unused", max_retries=0,
                               timeout=120)


def direct(vllm: VllmServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` sent straight to vLLM (``/v1`` + path) asking for its ids and logprobs; the JSON answer."""
    extra: dict[str, Any] = {"return_token_ids": True, "logprobs": 1 if path == "/completions" else True}
    r = httpx.post(f"{vllm.base_url}/v1{path}", json={"model": MODEL, **body, **extra}, timeout=120)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def tokenize(vllm: VllmServer, **body: Any) -> list[int]:
    """vLLM's ``/tokenize``: ``messages=``/``tools=`` (with the generation prompt) or ``prompt=``."""
    if "messages" in body:
        body["add_generation_prompt"] = True
    r = httpx.post(f"{vllm.base_url}/tokenize", json={"model": MODEL, **body}, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["tokens"])


def chat_logprobs(choice: dict[str, Any]) -> list[float]:
    return [float(e["logprob"]) for e in choice["logprobs"]["content"]]


def steps_or_none(gateway: Gateway, trajectory_id: str) -> list[dict[str, Any]]:
    """The trajectory's stored steps, [] when it does not exist."""
    r = httpx.get(f"{gateway.url}/api/v1/trajectories/{trajectory_id}", timeout=30)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return list(r.json()["steps"])


def wait_steps(gateway: Gateway, trajectory_id: str, n: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
    """The trajectory's stored steps once there are ``n`` (captures are written in the background after the
    answer reached the agent), in step order."""
    deadline = time.monotonic() + timeout
    while len(steps := steps_or_none(gateway, trajectory_id)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(steps) == n, (trajectory_id, steps, gateway.log_tail())
    return sorted(steps, key=lambda s: int(s["step_index"]))


def assert_step_matches(step: dict[str, Any], prompt_ids: list[int], token_ids: list[int],
                        logprobs: list[float]) -> None:
    """A stored step carries exactly vLLM's ids and, aligned with them, logprobs close to vLLM's."""
    assert step["token_source"] == "upstream" and step["provenance"]["warnings"] == [], step["provenance"]
    assert step["prompt_ids"] == prompt_ids
    assert step["response_ids"] == token_ids
    got = step["response_logprobs"]
    assert got is not None and len(got) == len(token_ids) == len(logprobs)
    assert max(abs(a - b) for a, b in zip(got, logprobs, strict=True)) <= LOGPROB_TOL
    if step["finish_reason"] in ("stop", "tool_calls"):
        assert token_ids[-1] == STOP_ID  # the stop token is part of the action
    else:
        assert STOP_ID not in token_ids


__all__ = ["STOP_ID", "SYSTEM", "QUESTION", "MESSAGES", "TOOLS", "TOOL_REGEX", "TOOL_QUESTION", "openai_client",
           "anthropic_client", "direct", "tokenize", "chat_logprobs", "steps_or_none", "wait_steps",
           "assert_step_matches"]
