"""OpenAI Responses (/v1/responses) through the gateway with the real openai SDK, against the fake upstream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from steplake.gateway import Gateway
from tests.gateway.conftest import Harness, build_app
from tests.gateway.fake_upstream import FakeUpstreamThread, render
from tests.gateway.responses_check import EVENTS, RESPONSE, check_stream, stream_raw, strict

CALC = {"type": "function", "name": "calculator", "description": "math", "strict": False,
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}
FORCED = {"type": "function", "name": "calculator"}


def sdk(h: Harness, base: str = "http://gw/v1") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app))
    return openai.AsyncOpenAI(base_url=base, api_key="x", http_client=http, max_retries=0)


def raw_of(resp: Any) -> dict[str, Any]:
    return resp.model_dump(mode="json", exclude_unset=True, by_alias=True)  # type: ignore[no-any-return]


async def test_text_whole_and_streamed_exact_ids(harness: Harness) -> None:
    client = sdk(harness)
    r = await client.responses.create(model="m", instructions="be brief", input="hello", temperature=0.5)
    assert r.output_text == "echo: hello" and r.status == "completed" and r.id.startswith("resp_st_")
    assert r.output[0].type == "message" and r.usage is not None and r.usage.output_tokens == len("echo: hello") + 1
    strict(RESPONSE, raw_of(r))
    async with client.responses.stream(model="m", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "yo"}]}]) as s:
        kinds = [ev.type async for ev in s]
        final = await s.get_final_response()
    assert final.output_text == "echo: yo" and kinds[0] == "response.created" and kinds[-1] == "response.completed"
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert [s["step_id"] for s in steps] == [r.id[5:], final.id[5:]]  # one step per call, id = resp_ + step id
    assert steps[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert steps[0]["prompt_ids"] == render(steps[0]["messages"]) and steps[0]["token_source"] == "upstream"
    assert steps[1]["response_ids"] == [*b"echo: yo", 1] and steps[1]["provenance"]["protocol"] == "openai.responses"
    assert steps[0]["sampling"]["temperature"] == 0.5 and steps[0]["trajectory_id"] != steps[1]["trajectory_id"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["resend", "previous"])
async def test_call_output_answer_one_trajectory(harness: Harness, stream: bool, mode: str) -> None:
    """Forced function call → function_call_output → answer → another user turn: one trajectory, in order,
    whether the agent re-sends its whole input or continues with previous_response_id."""
    client = sdk(harness)

    async def ask(inp: list[Any], prev: Any, **kw: Any) -> Any:
        args: dict[str, Any] = {"model": "m", "instructions": "use tools", "tools": [CALC], "input": inp, **kw}
        if mode == "previous" and prev is not None:
            args["previous_response_id"] = prev.id
        if not stream:
            return await client.responses.create(**args)
        async with client.responses.stream(**args) as s:
            return await s.get_final_response()
    history: list[Any] = [{"role": "user", "content": "What is 37*3?"}]
    r1 = await ask(history, None, tool_choice=FORCED)
    [call] = r1.output
    assert call.type == "function_call" and call.name == "calculator" and call.arguments == '{"expression": "37*3"}'
    out = {"type": "function_call_output", "call_id": call.call_id, "output": "111"}
    history += [o.model_dump(exclude_none=True) for o in r1.output]
    r2 = await ask([*history, out] if mode == "resend" else [out], r1)
    assert r2.output_text == "echo: 111"
    history += [out, *[o.model_dump(exclude_none=True) for o in r2.output]]
    user = {"role": "user", "content": "thanks"}
    r3 = await ask([*history, user] if mode == "resend" else [user], r2)
    assert r3.output_text == "echo: thanks"
    steps = await harness.steps()
    assert {s["trajectory_id"] for s in steps} == {steps[0]["trajectory_id"]}
    steps.sort(key=lambda s: s["step_index"])
    assert [s["step_id"] for s in steps] == [r.id[5:] for r in (r1, r2, r3)]
    assert [s["continuity"] for s in steps] == ["first", "clean", "clean"]
    for s in steps:
        assert s["prompt_ids"] == render(s["messages"]) and s["provenance"]["warnings"] == []
    assert steps[1]["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "111"}
    assert steps[1]["messages"][0] == {"role": "system", "content": "use tools"}
    assert steps[0]["response"]["tool_calls"][0]["id"] == call.call_id
    assert steps[2]["provenance"]["attribution"] == ("auto-join" if mode == "resend" else "previous_response")


async def test_stream_events_strict_and_in_order(harness: Harness) -> None:
    """Every event of a text stream and of a function-call stream is exactly one of the SDK's types, and
    the SDK's accumulator takes them in order; the final response equals GET /v1/responses/{id}."""
    text = await stream_raw(harness.client, "/v1/responses", {"model": "m", "input": "hello"})
    kinds = [e["type"] for e in text]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * (len(kinds) - 8),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    final = check_stream(text)
    assert "".join(e["delta"] for e in text if e["type"] == "response.output_text.delta") == "echo: hello"
    calls = await stream_raw(harness.client, "/v1/responses", {"model": "m", "input": "q", "tools": [CALC],
                                                                "tool_choice": "required"})
    kinds = [e["type"] for e in calls]
    assert kinds[2] == "response.output_item.added" and "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    done = check_stream(calls, [CALC])
    assert done["output"][0]["arguments"] == '{"expression": "37*3"}' and done["output"][0]["call_id"]
    await harness.settle()
    for resp in (final, done):
        got = await harness.client.get(f"/v1/responses/{resp['id']}")
        assert got.status_code == 200 and got.json() == resp
        strict(RESPONSE, got.json())


async def test_get_resolves_through_the_pool_and_store_false(harness: Harness) -> None:
    client = sdk(harness)
    r = await client.responses.create(model="m", input="hello", metadata={"task": "t1"})
    hidden = await client.responses.create(model="m", input="secret", store=False)
    await harness.settle()
    # another gateway on the same pool (a restarted or second server) knows the id
    other = Gateway(harness.gw.settings, harness.pool)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(other)))
    client2 = openai.AsyncOpenAI(base_url="http://gw2/v1", api_key="x", http_client=http, max_retries=0)
    got = await client2.responses.retrieve(r.id)
    assert raw_of(got) == raw_of(r) and got.metadata == {"task": "t1"}
    with pytest.raises(openai.NotFoundError):
        await client2.responses.retrieve(hidden.id)
    with pytest.raises(openai.NotFoundError) as e:
        await client.responses.create(model="m", input="more", previous_response_id=hidden.id)
    assert e.value.body == {"message": f"Previous response with id '{hidden.id}' not found.",  # type: ignore[comparison-overlap]
                            "type": "invalid_request_error", "param": "previous_response_id",
                            "code": "previous_response_not_found"}
    steps = await harness.steps()
    assert len(steps) == 2  # store: false is captured all the same
    assert [s for s in steps if s["step_id"] == hidden.id[5:]][0]["provenance"]["responses"]["store"] is False
    await http.aclose()


async def test_unknown_ids_and_refused_requests(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    c = harness.client
    for rid in ("resp_st_nope", "nope"):
        r = await c.get(f"/v1/responses/{rid}")
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = await c.post("/v1/responses", json={"model": "m", "input": "x", "previous_response_id": "resp_nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "previous_response_not_found"
    bad = [({"tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": []}]}, "file_search, web_search"),
           ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
           ({"background": True}, "background"),
           ({"tool_choice": {"type": "web_search"}}, "web_search"),
           ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
           ({"max_output_tokens": 0}, "max_output_tokens")]
    n = len(fake_up.fake.requests)
    for extra, named in bad:
        r = await c.post("/v1/responses", json={"model": "m", "input": "x", **extra})
        assert r.status_code == 400, (extra, r.text)
        err = r.json()["error"]
        assert named in err["message"] and err["type"] == "invalid_request_error" and "param" in err
    assert len(fake_up.fake.requests) == n  # nothing reached the upstream


async def test_format_limits_and_unused_fields(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    client = sdk(harness)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    await client.responses.create(model="m", input="x", include=["reasoning.encrypted_content"], truncation="auto",
                                  text={"format": {"type": "json_schema", "name": "out", "schema": schema,
                                                   "strict": True}}, top_p=0.9, max_output_tokens=64)
    sent = fake_up.fake.requests[-1]
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "out", "schema": schema, "strict": True}}
    assert sent["top_p"] == 0.9 and sent["max_tokens"] == 64
    await client.responses.create(model="m", input="x", text={"format": {"type": "json_object"}})
    assert fake_up.fake.requests[-1]["response_format"] == {"type": "json_object"}
    cut = await client.responses.create(model="m", input="a long question", max_output_tokens=4)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.output_text == "echo"
    events = await stream_raw(harness.client, "/v1/responses", {"model": "m", "input": "a long question",
                                                                  "max_output_tokens": 4})
    assert events[-1]["type"] == "response.incomplete" and check_stream(events)["status"] == "incomplete"
    steps = sorted(await harness.steps(), key=lambda s: s["created_at"])
    assert steps[0]["provenance"]["responses"]["unused"] == ["include", "truncation"]
    assert steps[2]["finish_reason"] == "length"


async def test_path_attribution_and_upstream_error(harness: Harness) -> None:
    client = sdk(harness, "http://gw/t/resp-1/v1")
    await client.responses.create(model="m", input="x")
    [step] = await harness.steps()
    assert step["trajectory_id"] == "resp-1"
    r = await harness.client.post("/v1/responses", json={"model": "m", "input": "[[429]]"})
    assert r.status_code == 429 and set(r.json()["error"]) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize("streamed", [False, True])
async def test_openai_agents_runner_with_a_function_tool(harness: Harness, streamed: bool) -> None:
    """The OpenAI Agents SDK (Responses model, tracing off: no network) runs an agent with one function tool
    through the gateway: a forced call, the tool's output, the final answer — one trajectory, two steps."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        seen.append(expression)
        return "111"
    model = OpenAIResponsesModel("m", sdk(harness))
    agent = Agent(name="calc", instructions="use tools", tools=[calculator], model=model,
                  model_settings=ModelSettings(tool_choice="calculator"))
    if streamed:
        run = Runner.run_streamed(agent, "What is 37*3?")
        async for _ in run.stream_events():
            pass
        final = run.final_output
    else:
        final = (await Runner.run(agent, "What is 37*3?")).final_output
    assert seen == ["37*3"] and final == "echo: 111"
    steps = sorted(await harness.steps(), key=lambda s: s["step_index"])
    assert len(steps) == 2 and steps[0]["trajectory_id"] == steps[1]["trajectory_id"]
    assert steps[1]["continuity"] == "clean" and steps[1]["messages"][-1]["content"] == "111"
    assert steps[1]["messages"][-1]["tool_call_id"] == steps[0]["response"]["tool_calls"][0]["id"]


async def test_stream_cut_by_the_upstream_ends_with_an_error_event(harness: Harness) -> None:
    events = await stream_raw(harness.client, "/v1/responses", {"model": "m", "input": "[[kill]] a long answer"})
    assert events[-1]["type"] == "error" and "response.completed" not in [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for e in events:
        strict(EVENTS, e)
    assert await harness.steps() == []
    r = await harness.client.post("/v1/responses", json={"model": "m", "input": "x", "metadata": {"a\u0000": "b"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata"


MALFORMED: list[dict[str, Any]] = [
    {"input": 5}, {"input": [5]}, {"input": [{"role": "user"}]}, {"input": [{"role": "user", "content": [5]}]},
    {"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, {"input": [{"role": "bot", "content": "x"}]},
    {"input": [{"type": "function_call"}]}, {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
    {"input": [{"type": "reasoning", "content": 5}]}, {"input": "x", "tools": 5}, {"input": "x", "tools": [5]},
    {"input": "x", "tools": [{"type": "function"}]}, {"input": "x", "tools": [{"type": "function", "name": "f",
                                                                               "parameters": 5}]},
    {"input": "x", "tool_choice": 5}, {"input": "x", "tool_choice": {"type": "function"}}, {"input": "x", "text": 5},
    {"input": "x", "text": {"format": 5}}, {"input": "x", "text": {"format": {"type": "json_schema"}}},
    {"input": "x", "instructions": 5}, {"input": "x", "temperature": "hot"}, {"input": "x", "max_output_tokens": "9"},
    {"input": "x", "metadata": 5}, {"input": "x", "store": "no"}, {"input": "x", "previous_response_id": 5},
    {"input": "x", "model": 5}, {"input": "x", "stream": "yes"}, {}, {"input": []},
    {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": 5}]}]},
]


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_requests_are_400s_in_the_responses_shape(harness: Harness, fake_up: FakeUpstreamThread,
                                                                  stream: bool) -> None:
    n = len(fake_up.fake.requests)
    for body in MALFORMED:
        r = await harness.client.post("/v1/responses", json={"model": "m", "stream": stream, **body})
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}, body
    assert len(fake_up.fake.requests) == n and await harness.steps() == []


async def test_capture_sync_failure_in_the_responses_shape(make_harness: Callable[..., Awaitable[Harness]],
                                                           fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url], capture_sync=True)
    h.pool.store.close()  # every write fails from now on
    try:
        r = await h.client.post("/v1/responses", json={"model": "m", "input": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "capture_failed" and "param" in r.json()["error"]
        events = await stream_raw(h.client, "/v1/responses", {"model": "m", "input": "y"})
        assert events[-1]["type"] == "error" and events[-1]["code"] == "capture_failed"
        assert not {"response.completed", "response.output_item.done"} & {e["type"] for e in events}
        for e in events:
            strict(EVENTS, e)
    finally:
        h.pool.store.open()
    assert h.pool.captures.failed == 2 and await h.steps() == []
