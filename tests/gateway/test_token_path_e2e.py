"""Acceptance of the token path (``--prompt-mode tokens``) on the embedded model: the OpenAI and Anthropic
SDKs, a forced tool call → the tool's result → the answer → a user turn, whole and streamed. Every later step is ``clean``
with ``provenance.prompt_mode == "tokens"``, and its prompt ids are exactly the previous step's prompt +
response + the renderer's bridge; an agent that edits its history gets a full render (a ``fork``), never a
splice. Slow: uses the embedded model (shared with test_model_e2e.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from steplake.app import create_app
from steplake.batches import tensorize
from steplake.config import Settings
from steplake.render.generic import TemplateRenderer
from tests.conftest import free_port
from tests.gateway.test_model_e2e import CALC, CALC_ANTHROPIC, model_url, steps_of  # noqa: F401  (a fixture)
from tests.procs import serve_app
from tests.render.test_bridge import smollm2_tokenizer

pytestmark = pytest.mark.slow
FORCED = {"type": "function", "function": {"name": "calculator"}}
SYSTEM = {"role": "system", "content": "You are a careful assistant. Use the calculator for arithmetic."}


@pytest.fixture(scope="module")
def token_server(model_url: str, renderer: TemplateRenderer,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    settings = Settings(port=port, db=str(tmp_path_factory.mktemp("tokens") / "pool.db"),
                        upstream=[f"steplake+{model_url}"], prompt_mode="tokens")
    with serve_app(create_app(settings), port, timeout=120, join=30) as url:
        yield url


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(smollm2_tokenizer())


def ask(client: openai.OpenAI, msgs: list[Any], stream: bool, **kw: Any) -> dict[str, Any]:
    """One call; the assistant message as the SDK assembled it (streamed: from the deltas)."""
    if not stream:
        out = client.chat.completions.create(model="m", messages=msgs, tools=[CALC], temperature=0, **kw)
        ch = out.choices[0]
        msg = ch.message.model_dump(exclude_none=True)
        return {**msg, "finish_reason": ch.finish_reason, "usage": out.usage}
    content, calls, finish = "", {}, None  # type: ignore[var-annotated]
    for chunk in client.chat.completions.create(model="m", messages=msgs, tools=[CALC], temperature=0,
                                                stream=True, **kw):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                cur = calls.setdefault(tc.index, {"id": None, "type": "function",
                                                  "function": {"name": None, "arguments": ""}})
                cur["id"] = tc.id or cur["id"]
                if tc.function and tc.function.name:
                    cur["function"]["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    cur["function"]["arguments"] += tc.function.arguments
            finish = ch.finish_reason or finish
    msg: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        msg["tool_calls"] = [calls[k] for k in sorted(calls)]
    return {**msg, "finish_reason": finish}


def history(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_forced_call_result_answer_and_user_turn_extend_the_sampled_sequence(
        token_server: str, renderer: TemplateRenderer, stream: bool) -> None:
    tid, channel = "tok-" + uuid.uuid4().hex[:8], "layout-" + uuid.uuid4().hex[:8]
    opened = httpx.post(f"{token_server}/api/v1/trajectories", json={"trajectory_id": tid, "channel": channel})
    assert opened.status_code in (200, 201), opened.text
    client = openai.OpenAI(base_url=f"{token_server}/t/{tid}/v1", api_key="x", max_retries=0)
    msgs: list[Any] = [SYSTEM, {"role": "user", "content": "What is 17 * 23?"}]
    first = ask(client, msgs, stream, tool_choice=FORCED, max_tokens=48)
    assert first["finish_reason"] == "stop"  # a named tool_choice finishes with stop, as in chat mode
    call = first["tool_calls"][0]
    assert call["function"]["name"] == "calculator" and call["id"].startswith("call_")
    assert isinstance(json.loads(call["function"]["arguments"]), dict)
    msgs += [history(first), {"role": "tool", "tool_call_id": call["id"], "content": "391"}]
    second = ask(client, msgs, stream, max_tokens=24)
    msgs += [history(second), {"role": "user", "content": "Thanks! And 2 + 2?"}]
    ask(client, msgs, stream, max_tokens=16)
    steps = steps_of(token_server, tid, 3)
    assert len(steps) == 3
    new_turns = [msgs[3:4], msgs[5:6]]
    for k, s in enumerate(steps):
        prov = s["provenance"]
        assert prov["prompt_mode"] == "tokens" and "prompt_mode_reason" not in prov, prov
        assert s["token_source"] == "upstream" and prov["warnings"] == [], prov
        assert prov["stream"] is stream
        if k == 0:
            assert s["continuity"] == "first" and prov["prompt_build"] == "render"
            assert s["prompt_ids"] == renderer.render(msgs[:2], [CALC])  # what the chat route renders too
            continue
        prev = steps[k - 1]
        bridge = renderer.bridge(prev["prompt_ids"], prev["response_ids"], new_turns[k - 1], [CALC])
        assert s["prompt_ids"] == prev["prompt_ids"] + prev["response_ids"] + bridge
        assert s["continuity"] == "clean" and prov["prompt_build"] == "bridge"
    # the stored answer is what the agent got: the call (ids kept), then text
    assert steps[0]["response"]["tool_calls"][0]["id"] == call["id"]
    assert steps[0]["finish_reason"] == "stop" and steps[1]["response"]["content"] == second["content"]
    stats = httpx.get(f"{token_server}/api/v1/stats").json()
    modes = json.dumps(stats)
    assert '"prompt_modes"' in modes
    assert_one_trajectory_row(token_server, tid, channel, steps)


def assert_one_trajectory_row(server: str, tid: str, channel: str, steps: list[dict[str, Any]]) -> None:
    """``layout: "trajectory"``: the clean token-path trajectory is one row whose loss mask covers the sampled
    tokens only (not the tool result, the user turn or the template's glue between turns)."""
    assert httpx.post(f"{server}/api/v1/trajectories/{tid}/complete", json={"reward": 1.0}).status_code == 200
    r = httpx.post(f"{server}/api/v1/batches", json={"channel": channel, "groups": 1, "recipe": "grpo",
                                                      "layout": "trajectory", "dry_run": True}, timeout=30)
    assert r.status_code == 200, r.text
    batch = r.json()
    assert [t["trajectory_id"] for g in batch["groups"] for t in g["trajectories"]] == [tid], batch["summary"]
    out = tensorize(batch, layout="trajectory", pad_token_id=0)
    assert len(out["responses"]) == 1  # one row for the whole trajectory
    want_ids: list[int] = []
    want_mask: list[int] = []
    for k, s in enumerate(steps):
        if k:
            prev = steps[k - 1]
            glue = s["prompt_ids"][len(prev["prompt_ids"]) + len(prev["response_ids"]):]
            want_ids += glue
            want_mask += [0] * len(glue)
        want_ids += s["response_ids"]
        want_mask += [1] * len(s["response_ids"])
    assert out["prompts"][0].tolist()[-len(steps[0]["prompt_ids"]):] == steps[0]["prompt_ids"]
    n = len(want_ids)
    assert out["responses"][0].tolist()[:n] == want_ids
    assert out["response_mask"][0].tolist()[:n] == want_mask and sum(out["response_mask"][0].tolist()) == sum(want_mask)


def test_an_edited_history_is_a_full_render_and_a_fork(token_server: str) -> None:
    tid = "tok-" + uuid.uuid4().hex[:8]
    client = openai.OpenAI(base_url=f"{token_server}/t/{tid}/v1", api_key="x", max_retries=0)
    msgs: list[Any] = [SYSTEM, {"role": "user", "content": "What is 6 * 7?"}]
    first = ask(client, msgs, False, tool_choice=FORCED, max_tokens=48)
    call = first["tool_calls"][0]
    tool = {"role": "tool", "tool_call_id": call["id"], "content": "42"}
    edited = [SYSTEM, {"role": "user", "content": "Please compute 6 times 7 for me, carefully."}, history(first), tool]
    ask(client, edited, False, max_tokens=16)
    a, b = steps_of(token_server, tid, 2)
    assert b["provenance"]["prompt_mode"] == "tokens" and b["provenance"]["prompt_build"] == "render"
    assert b["continuity"] == "fork"
    assert b["prompt_ids"][: len(a["prompt_ids"]) + len(a["response_ids"])] != a["prompt_ids"] + a["response_ids"]


def ask_anthropic(client: anthropic.Anthropic, msgs: list[Any], stream: bool, **kw: Any) -> Any:
    args = {"model": "m", "system": SYSTEM["content"], "messages": msgs, "tools": [CALC_ANTHROPIC],
            "extra_body": {"temperature": 0}, **kw}
    if not stream:
        return client.messages.create(**args)
    with client.messages.stream(**args) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_forced_call_result_answer_and_user_turn_extend_the_sampled_sequence(
        token_server: str, renderer: TemplateRenderer, stream: bool) -> None:
    tid = "tok-an-" + uuid.uuid4().hex[:8]
    client = anthropic.Anthropic(base_url=f"{token_server}/t/{tid}", api_key="x", max_retries=0)
    msgs: list[Any] = [{"role": "user", "content": "What is 17 * 23?"}]
    first = ask_anthropic(client, msgs, stream, tool_choice={"type": "tool", "name": "calculator"}, max_tokens=48)
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and use.name == "calculator" and use.id.startswith("toolu_")
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "391"}]}]
    second = ask_anthropic(client, msgs, stream, max_tokens=24)
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in second.content]},
             {"role": "user", "content": "Thanks! And 2 + 2?"}]
    ask_anthropic(client, msgs, stream, max_tokens=16)
    steps = steps_of(token_server, tid, 3)
    assert len(steps) == 3
    for k, s in enumerate(steps):
        prov = s["provenance"]
        assert prov["prompt_mode"] == "tokens" and prov["warnings"] == [] and prov["stream"] is stream, prov
        assert s["continuity"] == ("first" if k == 0 else "clean")
        if k:
            prev = steps[k - 1]
            new = s["messages"][len(prev["messages"]) + 1:]
            bridge = renderer.bridge(prev["prompt_ids"], prev["response_ids"], new, [CALC])
            assert s["prompt_ids"] == prev["prompt_ids"] + prev["response_ids"] + bridge
    assert steps[0]["response"]["tool_calls"][0]["id"] == use.id
    assert steps[1]["messages"][-1] == {"role": "tool", "tool_call_id": use.id, "content": "391"}
