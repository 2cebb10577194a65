"""Anthropic content blocks ⇄ chat, pure functions: images, documents, tool-result images, thinking (both
directions), the ``thinking`` param, and the 400s for what a chat upstream cannot take."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from steplake.errors import BadRequestError
from steplake.gateway.anthropic_wire import (
    StreamTranslator,
    answer_to_anthropic,
    for_upstream_kind,
    request_to_chat,
)
from steplake.gateway.validate import check_anthropic
from steplake.model.chat import to_template_messages

PNG = "iVBORw0KGgo="  # valid base64 (the PNG magic)
B64_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
URL_IMAGE = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
DATA_URL = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
CAT_URL = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}


def body(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 32, "messages": list(messages), **kw}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def chat_of(*messages: dict[str, Any], **kw: Any) -> dict[str, Any]:
    b = body(*messages, **kw)
    check_anthropic(b)
    return request_to_chat(b)


def test_images_become_image_url_parts_in_block_order() -> None:
    chat = chat_of(user(text("compare "), B64_IMAGE, text(" with "), URL_IMAGE))
    assert chat["messages"] == [{"role": "user", "content": [text("compare "), DATA_URL, text(" with "), CAT_URL]}]
    # text blocks only: still one string, as before
    assert chat_of(user(text("a"), text("b")))["messages"] == [{"role": "user", "content": "ab"}]


def test_text_and_content_documents_become_text() -> None:
    doc = {"type": "document", "title": "Notes", "context": "from the wiki",
           "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."}}
    chat = chat_of(user(doc, text("Summarize.")))
    assert chat["messages"][0]["content"] == [text("Notes\n\nfrom the wiki\n\nThe sky is blue."), text("Summarize.")]
    untitled = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}}
    assert chat_of(user(untitled))["messages"][0]["content"] == [text("plain")]
    blocks = {"type": "document", "title": "T", "source": {"type": "content", "content": [text("p1"), B64_IMAGE]}}
    assert chat_of(user(blocks))["messages"][0]["content"] == [text("T"), text("p1"), DATA_URL]
    as_str = {"type": "document", "source": {"type": "content", "content": "whole"}}
    assert chat_of(user(as_str))["messages"][0]["content"] == [text("whole")]


def test_tool_result_images_follow_the_tool_messages_in_order() -> None:
    call = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
                                             {"type": "tool_use", "id": "t2", "name": "shot", "input": {}}]}
    results = user({"type": "tool_result", "tool_use_id": "t1", "content": [text("page 1"), B64_IMAGE]},
                   {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
                    "content": [URL_IMAGE, text("partly failed")]},
                   text("what do you see?"))
    msgs = chat_of(user(text("go")), call, results)["messages"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "t1", "content": "page 1"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "t2", "content": "Error: partly failed"}
    assert msgs[4] == {"role": "user", "content": [DATA_URL, CAT_URL, text("what do you see?")]}
    assert len(msgs) == 5
    only_text = chat_of(user(text("go")), call, user({"type": "tool_result", "tool_use_id": "t1", "content": "ok"}))
    assert only_text["messages"][2:] == [{"role": "tool", "tool_call_id": "t1", "content": "ok"}]


def test_assistant_thinking_becomes_reasoning_content_and_redacted_is_skipped() -> None:
    hist = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "6*7 is 42", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque-bytes"},
        text("42")]}
    msgs = chat_of(user(text("6*7?")), hist, user(text("thanks")))["messages"]
    assert msgs[1] == {"role": "assistant", "content": "42", "reasoning_content": "6*7 is 42"}
    assert "opaque" not in orjson.dumps(msgs).decode()


@pytest.mark.parametrize("thinking,kwargs", [
    ({"type": "enabled", "budget_tokens": 2048}, {"enable_thinking": True}),
    ({"type": "disabled"}, {"enable_thinking": False}),
    ({"type": "adaptive"}, None),
    (None, None),
])
def test_thinking_param_becomes_chat_template_kwargs(thinking: Any, kwargs: Any) -> None:
    extra = {"thinking": thinking} if thinking else {}
    chat = chat_of(user(text("hi")), **extra)
    assert chat.get("chat_template_kwargs") == kwargs


def test_generic_openai_upstream_gets_no_vendor_fields() -> None:
    hist = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""}, text("a")]}
    chat = chat_of(user(text("q")), hist, user(text("q2")), thinking={"type": "disabled"})
    plain = for_upstream_kind(chat, "openai")
    assert "chat_template_kwargs" not in plain and "reasoning_content" not in plain["messages"][1]
    assert chat["messages"][1]["reasoning_content"] == "hm"  # the original is untouched
    assert for_upstream_kind(chat, "sglang") is chat


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_answer_reasoning_becomes_a_leading_thinking_block(key: str) -> None:
    data = {"id": "chatcmpl-1", "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 5},
            "choices": [{"message": {"role": "assistant", "content": "42", key: "6*7=42"}, "finish_reason": "stop"}]}
    msg = answer_to_anthropic(data, body(user(text("q"))))
    assert msg["content"] == [{"type": "thinking", "thinking": "6*7=42", "signature": ""}, text("42")]
    assert msg["stop_reason"] == "end_turn"


def events_of(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for ev in raw:
        name, data = ev.decode().strip().split("\n")
        payload = orjson.loads(data.removeprefix("data: "))
        assert name == "event: " + payload["type"]
        out.append(payload)
    return out


def test_stream_reasoning_opens_a_thinking_block_before_the_text() -> None:
    tr = StreamTranslator(body(user(text("q"))))
    raw: list[bytes] = []
    for d in ({"role": "assistant", "content": ""}, {"reasoning_content": "6*7"}, {"reasoning": "=42"},
              {"content": "4"}, {"content": "2"}):
        raw += tr.chunk({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "delta": d}]})
    raw += tr.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    evs = events_of(raw + tr.finish_events())
    assert [e["type"] for e in evs] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert evs[2] == {"type": "content_block_start", "index": 0,
                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    assert [e["delta"] for e in evs[3:5]] == [{"type": "thinking_delta", "thinking": "6*7"},
                                              {"type": "thinking_delta", "thinking": "=42"}]
    assert evs[5]["index"] == 0 and evs[6]["index"] == 1 and evs[6]["content_block"]["type"] == "text"
    assert evs[7]["delta"] == {"type": "text_delta", "text": "4"} and evs[9]["index"] == 1


def test_stream_reasoning_then_tool_call() -> None:
    tr = StreamTranslator(body(user(text("q"))))
    raw = tr.chunk({"choices": [{"index": 0, "delta": {"reasoning_content": "use the tool"}}]})
    raw += tr.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "calc", "arguments": "{}"}}]}}]})
    raw += tr.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    evs = events_of(raw + tr.finish_events())
    starts = [e for e in evs if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "thinking"), (1, "tool_use")]
    assert [e["index"] for e in evs if e["type"] == "content_block_stop"] == [0, 1]
    assert evs[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("blocks,needle", [
    ([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}], "source.data"),
    ([{"type": "image", "source": {"type": "base64", "data": PNG}}], "source.media_type"),
    ([{"type": "image", "source": {"type": "base64", "media_type": "text/plain", "data": PNG}}], "image media"),
    ([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "data:image/png;base64,"
                                   + PNG}}], "not valid base64"),
    ([{"type": "image", "source": {"type": "url"}}], "source.url"),
    ([{"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}], "http(s)"),
    ([{"type": "image", "source": {"type": "file", "file_id": "f"}}], "source.type"),
    ([{"type": "image"}], "source"),
    ([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}}], "PDF"),
    ([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}], "PDF"),
    ([{"type": "document", "source": {"type": "text", "media_type": "text/plain"}}], "source.data"),
    ([{"type": "document", "source": {"type": "content", "content": [{"type": "tool_use"}]}}], "'tool_use'"),
    ([{"type": "search_result", "source": "s", "title": "t", "content": []}], "'search_result'"),
    ([{"type": "text"}], ".text"),
    ([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "thinking", "thinking": "x"}]}],
     "'thinking'"),
    ([{"type": "tool_result", "content": "x"}], "tool_use_id"),
    ([{"type": "tool_result", "tool_use_id": "t", "content": [B64_IMAGE, {"type": "image"}]}], "content.1.source"),
])
def test_malformed_or_unsupported_user_blocks_are_400s(blocks: list[Any], needle: str) -> None:
    with pytest.raises(BadRequestError) as e:
        check_anthropic(body(user(text("see"), *blocks)))
    assert needle in e.value.message and e.value.status == 400
    assert e.value.to_anthropic()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("extra,needle", [
    ({"messages": [user(text("q")), {"role": "assistant", "content": [B64_IMAGE]}]}, "'image'"),
    ({"messages": [user(text("q")), {"role": "assistant", "content": [{"type": "thinking"}]}]}, ".thinking"),
    ({"thinking": {"type": "enabled"}}, "budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "'thinking' must be"),
    ({"thinking": True}, "'thinking' must be"),
    ({"system": [{"type": "image", "source": {}}]}, "'system'"),
])
def test_malformed_assistant_blocks_system_and_thinking_param_are_400s(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadRequestError) as e:
        check_anthropic({**body(user(text("q"))), **extra})
    assert needle in e.value.message


def test_embedded_model_refuses_images_clearly() -> None:
    for part in (DATA_URL, {"type": "input_image", "image_url": "x"}):
        with pytest.raises(BadRequestError) as e:
            to_template_messages([{"role": "user", "content": [text("look"), part]}])
        assert "the embedded model is text-only; image inputs need a multimodal upstream" in e.value.message
        assert e.value.to_openai()["error"]["type"] == "invalid_request_error" and e.value.status == 400
