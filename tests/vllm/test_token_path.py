"""The token path (``--prompt-mode tokens``) against the real vLLM, with the OpenAI and the Anthropic SDK:
a forced tool call (constrained with vLLM's structured outputs) → the tool's result → the answer → a user
turn, whole and streamed. Every later step is ``clean`` with ``provenance.prompt_mode == "tokens"``; each
stored step's ids are vLLM's own (the same ``/v1/completions`` sent straight to vLLM with the stored prompt
ids gives the same response ids, greedy, float32); what the agent received is the parse of the stored
response ids (null content ≡ "", arguments as parsed JSON, tool-call ids the ones the agent sends back). An
agent that edits its history gets a full render: a ``fork``, never a splice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from steplake.gateway.forced import forced_call
from steplake.render.generic import TemplateRenderer
from steplake.upstreams.tokenizer import FallbackTokenizer
from tests.procs import stop_process
from tests.vllm.conftest import MODEL, Gateway, launch_gateway
from tests.vllm.wire import (
    LOGPROB_TOL,
    STOP_ID,
    SYSTEM,
    TOOL_QUESTION,
    TOOLS,
    anthropic_client,
    direct,
    openai_client,
    wait_steps,
)
from tests.vllm_server import VllmInstall, VllmServer

FORCED = {"type": "function", "function": {"name": "calculator"}}
CALC = {"name": "calculator", "description": TOOLS[0]["function"]["description"],
        "input_schema": TOOLS[0]["function"]["parameters"]}
# max_tokens per turn: the forced call (~30 ids with its end of turn), the answer, the answer to the user turn
LIMITS = (32, 16, 8)


@pytest.fixture(scope="module")
def token_gateway(vllm: VllmServer, vllm_install: VllmInstall,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = launch_gateway(tmp_path_factory.mktemp("tokens"), f"vllm+{vllm.base_url}",
                        ["--prompt-mode", "tokens", "--tokenizer", str(vllm_install.model_dir)])
    try:
        yield gw
    finally:
        stop_process(gw.proc)


@pytest.fixture(scope="module")
def renderer(vllm_install: VllmInstall) -> TemplateRenderer:
    return TemplateRenderer(FallbackTokenizer(str(vllm_install.model_dir)).load())


def assert_steps_are_vllms(vllm: VllmServer, renderer: TemplateRenderer, steps: list[dict[str, Any]],
                           stream: bool) -> None:
    """Tokens mode all along, later steps clean, and each stored step is what vLLM samples for its ids."""
    for k, s in enumerate(steps):
        prov = s["provenance"]
        assert prov["prompt_mode"] == "tokens" and "prompt_mode_reason" not in prov, prov
        assert prov["warnings"] == [] and s["token_source"] == "upstream" and prov["stream"] is stream, prov
        assert s["continuity"] == ("first" if k == 0 else "clean"), (k, s["continuity"])
        assert prov["prompt_build"] == ("render" if k == 0 else "bridge")
        if k:
            prev = steps[k - 1]
            assert s["prompt_ids"][: len(prev["prompt_ids"]) + len(prev["response_ids"])] == \
                prev["prompt_ids"] + prev["response_ids"]
        body: dict[str, Any] = {"prompt": s["prompt_ids"], "max_tokens": LIMITS[k], "temperature": 0}
        if k == 0:
            body["structured_outputs"] = forced_call(renderer, TOOLS, FORCED)[0]
        ref = direct(vllm, "/completions", body)["choices"][0]
        assert s["response_ids"] == ref["token_ids"], (k, s["response_ids"], ref["token_ids"])
        lps = ref["logprobs"]["token_logprobs"]
        assert max(abs(a - b) for a, b in zip(s["response_logprobs"], lps, strict=True)) <= LOGPROB_TOL
    assert steps[0]["response_ids"][-1] == STOP_ID  # the forced call ends its turn


def assert_received_is_the_parse(renderer: TemplateRenderer, step: dict[str, Any], content: str | None,
                                 calls: list[tuple[str, str, Any]]) -> None:
    """``calls``: (id, name, arguments as parsed JSON) as the agent received them."""
    parsed = renderer.parse(step["response_ids"])
    assert (content or "") == (parsed.content or "")
    assert [(n, a) for _, n, a in calls] == [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls]
    stored = step["response"].get("tool_calls") or []
    assert [c["id"] for c in stored] == [i for i, _, _ in calls]


# OpenAI ------------------------------------------------------------------------------------------------
def ask_openai(client: Any, msgs: list[Any], stream: bool, **kw: Any) -> dict[str, Any]:
    """The assistant message as the SDK gives it (streamed: assembled from the deltas)."""
    args = {"model": MODEL, "messages": msgs, "tools": TOOLS, "temperature": 0, **kw}
    if not stream:
        return dict(client.chat.completions.create(**args).choices[0].message.model_dump(exclude_none=True))
    content, calls = "", {}  # type: ignore[var-annotated]
    for chunk in client.chat.completions.create(stream=True, **args):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                cur = calls.setdefault(tc.index, {"id": "", "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
                cur["id"] += tc.id or ""
                cur["function"]["name"] += (tc.function and tc.function.name) or ""
                cur["function"]["arguments"] += (tc.function and tc.function.arguments) or ""
    msg: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        msg["tool_calls"] = [calls[k] for k in sorted(calls)]
    return msg


def history(msg: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": msg.get("content"), "tool_calls": msg["tool_calls"]}


def openai_calls(msg: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in msg.get("tool_calls") or []]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_agent_forced_call_result_answer_user_turn(vllm: VllmServer, token_gateway: Gateway,
                                                          renderer: TemplateRenderer, stream: bool) -> None:
    tid = f"tok-openai-{stream}"
    client = openai_client(token_gateway, tid)
    msgs: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TOOL_QUESTION}]
    got = [ask_openai(client, msgs, stream, tool_choice=FORCED, max_tokens=LIMITS[0])]
    [call] = got[0]["tool_calls"]
    assert call["function"]["name"] == "calculator" and call["id"].startswith("call_")
    msgs += [history(got[0]),
             {"role": "tool", "tool_call_id": call["id"], "content": "111"}]
    got.append(ask_openai(client, msgs, stream, max_tokens=LIMITS[1]))
    msgs += [{"role": "assistant", "content": got[1]["content"]}, {"role": "user", "content": "Thanks! And 2+2?"}]
    got.append(ask_openai(client, msgs, stream, max_tokens=LIMITS[2]))
    steps = wait_steps(token_gateway, tid, 3)
    assert_steps_are_vllms(vllm, renderer, steps, stream)
    for s, msg in zip(steps, got, strict=True):
        assert_received_is_the_parse(renderer, s, msg.get("content"), openai_calls(msg))
    assert steps[1]["messages"][3]["tool_call_id"] == call["id"] == steps[0]["response"]["tool_calls"][0]["id"]


# Anthropic ---------------------------------------------------------------------------------------------
def ask_anthropic(client: anthropic.Anthropic, msgs: list[Any], stream: bool, **kw: Any) -> Any:
    args = {"model": MODEL, "system": SYSTEM, "messages": msgs, "tools": [CALC], "extra_body": {"temperature": 0},
            **kw}
    if not stream:
        return client.messages.create(**args)
    with client.messages.stream(**args) as s:
        return s.get_final_message()


def anthropic_received(msg: Any) -> tuple[str, list[tuple[str, str, Any]]]:
    text = "".join(b.text for b in msg.content if b.type == "text")
    return text, [(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_agent_forced_call_result_answer_user_turn(vllm: VllmServer, token_gateway: Gateway,
                                                             renderer: TemplateRenderer, stream: bool) -> None:
    tid = f"tok-anthropic-{stream}"
    client = anthropic_client(token_gateway, tid)
    msgs: list[Any] = [{"role": "user", "content": TOOL_QUESTION}]
    first = ask_anthropic(client, msgs, stream, tool_choice={"type": "tool", "name": "calculator"},
                          max_tokens=LIMITS[0])
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and use.name == "calculator" and use.id.startswith("toolu_")
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "111"}]}]
    second = ask_anthropic(client, msgs, stream, max_tokens=LIMITS[1])
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in second.content]},
             {"role": "user", "content": "Thanks! And 2+2?"}]
    third = ask_anthropic(client, msgs, stream, max_tokens=LIMITS[2])
    steps = wait_steps(token_gateway, tid, 3)
    assert_steps_are_vllms(vllm, renderer, steps, stream)
    for s, msg in zip(steps, (first, second, third), strict=True):
        assert_received_is_the_parse(renderer, s, *anthropic_received(msg))
    assert steps[1]["messages"][3] == {"role": "tool", "tool_call_id": use.id, "content": "111"}
    assert steps[0]["response"]["tool_calls"][0]["id"] == use.id


def test_an_edited_history_is_a_fork_not_a_splice(token_gateway: Gateway) -> None:
    tid = "tok-edited"
    client = openai_client(token_gateway, tid)
    msgs: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TOOL_QUESTION}]
    first = ask_openai(client, msgs, False, tool_choice=FORCED, max_tokens=LIMITS[0])
    [call] = first["tool_calls"]
    edited = [msgs[0], {"role": "user", "content": "Compute 37 times 3 with the calculator, please."},
              history(first),
              {"role": "tool", "tool_call_id": call["id"], "content": "111"}]
    ask_openai(client, edited, False, max_tokens=4)
    a, b = wait_steps(token_gateway, tid, 2)
    assert b["provenance"]["prompt_mode"] == "tokens" and b["provenance"]["prompt_build"] == "render"
    assert b["continuity"] == "fork"
    n = len(a["prompt_ids"]) + len(a["response_ids"])
    assert b["prompt_ids"][:n] != a["prompt_ids"] + a["response_ids"]
