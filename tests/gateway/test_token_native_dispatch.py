"""The token path dispatches to SGLang's ``/generate`` and llama.cpp's ``/completion`` (gateway/token_upstreams.py)
for ``sglang+`` and ``llamacpp+`` upstreams: the rendered ids go out as ``input_ids`` / ``prompt``, and the step
records them with the ids the server sampled, whole and streamed (against the fake upstream's native routes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from steplake.render.generic import TemplateRenderer
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.render.tiny import tiny_tokenizer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
Make = Callable[..., Awaitable[Harness]]


@pytest.fixture
def tok_dir(tmp_path: Path) -> str:
    d = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(str(d))
    return str(d)


async def call(h: Harness, tid: str, stream: bool) -> str:
    """The assistant's text as the agent received it."""
    body: dict[str, Any] = {"model": "m", "messages": MSGS, "max_tokens": 8, "stream": stream}
    r = await h.client.post(f"/t/{tid}/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    if not stream:
        return str(r.json()["choices"][0]["message"]["content"] or "")
    text = ""
    for line in r.text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            chunk = orjson.loads(line[5:])
            assert "error" not in chunk, chunk
            for ch in chunk.get("choices") or []:
                text += (ch.get("delta") or {}).get("content") or ""
    return text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["sglang", "llamacpp"])
async def test_native_token_upstreams_get_the_ids(make_harness: Make, fake_up: FakeUpstreamThread, tok_dir: str,
                                                  kind: str, stream: bool) -> None:
    h = await make_harness([f"{kind}+{fake_up.url}"], prompt_mode="tokens", tokenizer=tok_dir)
    rendered = TemplateRenderer(tiny_tokenizer()).render(MSGS, None)
    text = await call(h, f"t-{kind}-{stream}", stream)
    sent = fake_up.fake.requests[-1]
    assert (sent["input_ids"] if kind == "sglang" else sent["prompt"]) == rendered, sent
    [step] = await h.steps(f"t-{kind}-{stream}")
    prov = step["provenance"]
    assert prov["prompt_mode"] == "tokens" and prov["upstream_kind"] == kind, prov
    assert step["prompt_ids"] == rendered and step["token_source"] == "upstream"
    assert step["response_ids"] and len(step["response_ids"]) == len(step["response_logprobs"] or step["response_ids"])
    assert text and text == (step["response"]["content"] or ""), (text, step["response"])
