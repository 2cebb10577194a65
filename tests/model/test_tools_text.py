"""Tool-call text convention: rendering, parsing, repair, streaming, forced plans (no model needed)."""

from __future__ import annotations

import json

import pytest

from steplake.errors import BadRequestError
from steplake.model.chat import DEFAULT_SYSTEM, normalize_tools, to_template_messages
from steplake.model.decoding import Forced, JsonValue, OneOf
from steplake.model.tools import ToolCallStreamer, forced_tool_plan, parse_tool_calls

CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


def test_messages_render_tools_calls_and_results_as_text() -> None:
    msgs = to_template_messages([
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "calculator",
                                                              "arguments": '{"expression":"2+2"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "developer", "content": "be brief"},
    ], [CALC])
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(DEFAULT_SYSTEM)
    assert '"name": "calculator"' in msgs[0]["content"] and "<tools>" in msgs[0]["content"]
    assert msgs[1] == {"role": "user", "content": "What is 2+2?"}
    # arguments render verbatim (as the model sampled them), so the next prompt extends the sampled text
    assert msgs[2]["content"] == '<tool_call>{"name": "calculator", "arguments": {"expression":"2+2"}}</tool_call>'
    assert msgs[3] == {"role": "user", "content": "<tool_response>\n4\n</tool_response>"}
    assert msgs[4] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("messages", [[], "hi", [{"role": "wizard", "content": "x"}], [{"content": "x"}],
                                      [{"role": "user", "content": [{"type": "image_url"}]}],
                                      [{"role": "user", "content": 3}]])
def test_bad_messages_are_bad_requests(messages: object) -> None:
    with pytest.raises(BadRequestError):
        to_template_messages(messages)


def test_parse_plain_repaired_and_broken_calls() -> None:
    ok = parse_tool_calls('Sure. <tool_call>{"name": "calculator", "arguments": {"expression": "37*3"}}</tool_call>')
    assert ok.content == "Sure." and ok.tool_calls[0].name == "calculator"
    assert json.loads(ok.tool_calls[0].arguments) == {"expression": "37*3"}
    assert ok.tool_calls[0].id.startswith("call_") and not ok.repairs
    cut = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {"expression": "37')
    assert json.loads(cut.tool_calls[0].arguments) == {"expression": "37"} and cut.repairs
    extra = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}}</tool_call>')
    assert json.loads(extra.tool_calls[0].arguments) == {"x": 1} and extra.repairs
    tag_in_string = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": "a</tool_call>b"}}</tool_call>')
    assert json.loads(tag_in_string.tool_calls[0].arguments) == {"x": "a</tool_call>b"}
    broken = parse_tool_calls("<tool_call>garbage</tool_call> tail")
    assert broken.tool_calls == [] and broken.errors and broken.content == "<tool_call>garbage</tool_call> tail"


def test_streamer_matches_the_parser_character_by_character() -> None:
    text = 'Hi <tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>{"name": "b", "arguments": {"q": 1}}</tool_call>'
    streamer = ToolCallStreamer()
    events = [ev for ch in text for ev in streamer.feed(ch)] + streamer.finish()
    content = "".join(e.text for e in events if e.kind == "content")
    calls = [(e.index, e.call.name, e.call.arguments) for e in events if e.call]
    parsed = parse_tool_calls(text)
    assert content.strip() == parsed.content
    assert calls == [(i, c.name, c.arguments) for i, c in enumerate(parsed.tool_calls)]


def test_forced_plans() -> None:
    tools = normalize_tools([CALC, {"type": "function", "function": {"name": "other"}}])
    named = forced_tool_plan(tools, {"type": "function", "function": {"name": "calculator"}}, eos=2)
    assert named is not None and isinstance(named[0], Forced) and isinstance(named[1], JsonValue)
    assert named[0].text == '<tool_call>{"name": "calculator", "arguments": '
    assert named[-1] == Forced(ids=(2,))
    required = forced_tool_plan(tools, "required", eos=2)
    assert required is not None and isinstance(required[1], OneOf)
    assert set(required[1].options) == {'calculator"', 'other"'}
    assert forced_tool_plan(tools, "auto", eos=2) is None
    for bad in ({"type": "function", "function": {"name": "nope"}}, "sometimes"):
        with pytest.raises(BadRequestError):
            forced_tool_plan(tools, bad, eos=2)
