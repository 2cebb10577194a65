"""Acceptance: the openai SDK's Responses API through a real steplake server in front of the embedded model
(slow): forced function call → function_call_output → answer → a user turn, each call one step with the
ids the model sampled, in one trajectory, whether the agent re-sends its input or uses previous_response_id."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.responses_check import check_stream, sse_events
from tests.gateway.test_model_e2e import CALC, model_url, server  # noqa: F401  (fixtures)
from tests.gateway.test_token_path_e2e import renderer, token_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
TOOL = {"type": "function", **CALC["function"]}
FORCED = {"type": "function", "name": "calculator"}


def _ask(client: openai.OpenAI, stream: bool, **kw: Any) -> Any:
    if not stream:
        return client.responses.create(model="m", temperature=0, **kw)
    with client.responses.stream(model="m", temperature=0, **kw) as s:
        return s.get_final_response()


def _step(server: str, rid: str) -> dict[str, Any]:  # noqa: F811  (not the fixture)
    for _ in range(100):
        r = httpx.get(f"{server}/api/v1/steps/{rid.removeprefix('resp_')}")
        if r.status_code == 200:
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"step of {rid} not stored")


@pytest.mark.parametrize("mode", ["resend", "previous"])
def test_three_turns_one_trajectory_exact_ids(server: str, local_model: Any, mode: str) -> None:  # noqa: F811
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
    stream = mode == "previous"
    # a fixed question per mode (greedy: the same short call every run; a random tag in the question once made
    # the model write arguments past the token limit, and a cut stream ends with response.incomplete)
    q = {"role": "user", "content": f"What is 37*3? (Responses, {mode})"}
    r1 = _ask(client, stream, input=[q], tools=[TOOL], tool_choice=FORCED, max_output_tokens=96)
    call = r1.output[-1]
    assert call.type == "function_call" and call.name == "calculator" and call.call_id
    out = {"type": "function_call_output", "call_id": call.call_id, "output": "111"}
    history: list[Any] = [q, *[o.model_dump(exclude_none=True) for o in r1.output]]
    prev: dict[str, Any] = {"previous_response_id": r1.id} if stream else {}
    r2 = _ask(client, stream, input=[out] if stream else [*history, out], tools=[TOOL], max_output_tokens=16,
              **prev)
    history += [out, *[o.model_dump(exclude_none=True) for o in r2.output]]
    user = {"role": "user", "content": "Thanks. Say bye."}
    prev = {"previous_response_id": r2.id} if stream else {}
    r3 = _ask(client, stream, input=[user] if stream else [*history, user], tools=[TOOL], max_output_tokens=16,
              **prev)
    steps = [_step(server, r.id) for r in (r1, r2, r3)]
    assert len({s["trajectory_id"] for s in steps}) == 1 and [s["step_index"] for s in steps] == [0, 1, 2]
    assert steps[1]["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "111"}
    for r, s in zip((r1, r2, r3), steps, strict=True):
        assert s["token_source"] == "upstream" and s["provenance"]["warnings"] == []
        assert len(s["response_ids"]) == r.usage.output_tokens and len(s["prompt_ids"]) == r.usage.input_tokens
    for r, s in ((r2, steps[1]), (r3, steps[2])):
        body = [t for t in s["response_ids"] if t not in local_model.eos_token_ids]
        assert local_model.decode(body).strip() == r.output_text.strip()
    if stream:  # the raw events of a streamed call, strictly the SDK's types, in the accumulator's order
        raw = httpx.post(f"{server}/v1/responses", timeout=300,
                         json={"model": "m", "input": "Say hi.", "max_output_tokens": 8, "stream": True})
        assert raw.status_code == 200 and check_stream(sse_events(raw.text))["output"]


def test_token_path_streamed_with_previous_response_id(token_server: str) -> None:  # noqa: F811
    """--prompt-mode tokens: each Responses call is rendered or bridged to token ids; continuing by
    previous_response_id gives clean steps (prompt = previous prompt + sampled ids + bridge)."""
    client = openai.OpenAI(base_url=f"{token_server}/v1", api_key="x", max_retries=0)
    sys = "You are a careful assistant. Use the calculator for arithmetic."
    r1 = _ask(client, True, instructions=sys, input="What is 17 * 23?", tools=[TOOL], tool_choice=FORCED,
              max_output_tokens=48)
    call = r1.output[-1]
    assert call.type == "function_call" and call.call_id.startswith("call_")
    out = {"type": "function_call_output", "call_id": call.call_id, "output": "391"}
    r2 = _ask(client, True, instructions=sys, input=[out], tools=[TOOL], max_output_tokens=24,
              previous_response_id=r1.id)
    steps = [_step(token_server, r.id) for r in (r1, r2)]
    assert steps[0]["trajectory_id"] == steps[1]["trajectory_id"]
    assert [s["provenance"]["prompt_mode"] for s in steps] == ["tokens", "tokens"]
    assert steps[0]["response"]["tool_calls"][0]["id"] == call.call_id
    assert steps[1]["continuity"] == "clean" and steps[1]["provenance"]["prompt_build"] == "bridge"
    assert steps[1]["response"]["content"] == r2.output_text
