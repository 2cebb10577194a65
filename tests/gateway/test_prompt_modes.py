"""Prompt modes against the fake vLLM-shaped upstream (fast): which calls take the token path, what is sent
to ``/v1/completions``, what each step records, and the fallback to chat mode when the bridge fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from steplake.errors import RenderError
from steplake.render.generic import TemplateRenderer
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.render.tiny import tiny_tokenizer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
Make = Callable[..., Awaitable[Harness]]


class NoBridge(TemplateRenderer):
    """Renders, but its bridge always fails (a renderer failure at run time)."""

    def __init__(self, tok: Any) -> None:
        super().__init__(tok, name="nobridge")

    def bridge(self, *a: Any, **kw: Any) -> list[int]:
        raise RenderError("this bridge always fails")


@pytest.fixture
def tok_dir(tmp_path: Path) -> str:
    d = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(str(d))
    return str(d)


async def chat(h: Harness, tid: str, msgs: list[Any], **kw: Any) -> dict[str, Any]:
    r = await h.client.post(f"/t/{tid}/v1/chat/completions", json={"model": "m", "messages": msgs, **kw})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_chat_mode_is_the_default_and_says_so(make_harness: Make, fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"])
    await chat(h, "t-chat", MSGS)
    [step] = await h.steps("t-chat")
    assert step["provenance"]["prompt_mode"] == "chat"
    assert step["provenance"]["prompt_mode_reason"] == "--prompt-mode chat"
    assert fake_up.fake.requests[-1].get("messages") == MSGS  # the upstream rendered them
    assert h.gw.stats()["prompt_modes"]["steps"] == {"chat": 1, "tokens": 0}


async def test_an_upstream_that_takes_no_token_prompts_stays_in_chat(make_harness: Make, fake_up: FakeUpstreamThread,
                                                                     tok_dir: str) -> None:
    h = await make_harness([f"openai+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    await chat(h, "t-openai", MSGS)
    [step] = await h.steps("t-openai")
    assert step["provenance"]["prompt_mode"] == "chat"
    assert "kind openai" in step["provenance"]["prompt_mode_reason"]


async def test_tokens_mode_sends_the_render_and_then_the_bridge(make_harness: Make, fake_up: FakeUpstreamThread,
                                                                tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    r = TemplateRenderer(tiny_tokenizer())
    first = await chat(h, "t-tok", MSGS, temperature=0.5, max_completion_tokens=12, seed=7, stop=["\n\n"])
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"] == {"role": "assistant", "content": "done0"}
    assert first["choices"][0]["finish_reason"] == "stop" and "prompt_token_ids" not in first
    sent = fake_up.fake.requests[-1]
    assert sent["prompt"] == r.render(MSGS, None) and sent["return_token_ids"] is True
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"]) == (0.5, 12, 7, ["\n\n"])
    msgs = [*MSGS, {"role": "assistant", "content": "done0"}, {"role": "user", "content": "again"}]
    await chat(h, "t-tok", msgs)
    a, b = await h.steps("t-tok")
    assert a["prompt_ids"] == sent["prompt"] and a["provenance"]["prompt_build"] == "render"
    bridge = r.bridge(a["prompt_ids"], a["response_ids"], msgs[3:], None)
    assert fake_up.fake.requests[-1]["prompt"] == b["prompt_ids"] == a["prompt_ids"] + a["response_ids"] + bridge
    assert b["continuity"] == "clean" and b["provenance"]["prompt_mode"] == "tokens"
    assert b["provenance"]["prompt_build"] == "bridge" and b["provenance"]["renderer"] == "generic-hermes"
    assert "prompt_mode_reason" not in b["provenance"]
    stats = h.gw.stats()["prompt_modes"]
    assert stats["steps"] == {"chat": 0, "tokens": 2} and stats["builds"] == {"bridge": 1, "render": 1}


async def test_a_bridge_failure_answers_in_chat_mode_flagged_and_counted(make_harness: Make,
                                                                        fake_up: FakeUpstreamThread,
                                                                        tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir,
                           renderer=f"{__name__}:NoBridge")
    await chat(h, "t-fb", MSGS)
    msgs = [*MSGS, {"role": "assistant", "content": "done0"}, {"role": "user", "content": "again"}]
    out = await chat(h, "t-fb", msgs)
    assert out["choices"][0]["message"]["content"].startswith("echo")  # the upstream's chat answer
    a, b = await h.steps("t-fb")
    assert a["provenance"]["prompt_mode"] == "tokens"
    assert b["provenance"]["prompt_mode"] == "chat" and "failed" in b["provenance"]["prompt_mode_reason"]
    assert any(w.startswith("token_path_failed: RenderError") for w in b["provenance"]["warnings"])
    stats = h.gw.stats()["prompt_modes"]
    assert stats["fallbacks"] == 1 and stats["steps"] == {"chat": 1, "tokens": 1}


async def test_messages_the_renderer_cannot_take_are_a_400(make_harness: Make, fake_up: FakeUpstreamThread,
                                                          tok_dir: str) -> None:
    h = await make_harness([f"vllm+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    bad = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "messages": bad})
    assert r.status_code == 400 and "messages[0].content[0]" in r.json()["error"]["message"]
