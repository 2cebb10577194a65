"""The token path's upstream routes: SGLang ``/generate`` with ``input_ids`` and llama.cpp ``/completion``
with a token array, over real HTTP against the fake upstream's native routes; each answer (whole and
streamed) reads back as the ``/v1/completions`` answer the token path builds the agent's answer from."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from steplake.errors import UpstreamFailure
from steplake.gateway.token_upstreams import completion_events, open_completion_stream, post_completion
from steplake.gateway.tokens import AnswerAcc
from steplake.upstreams.base import parse_upstream
from steplake.upstreams.openai_compat import UpstreamClient
from tests.gateway.fake_upstream import EOT, FakeUpstreamThread, logprob

PROMPT = [1000, 72, 105, 1, 1002]


def cbody(**kw: Any) -> dict[str, Any]:
    """A token request as ``token_chat.completion_body`` makes it."""
    return {"model": "m", "prompt": PROMPT, "return_token_ids": True, "stream": False, "logprobs": 0,
            "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "stop": ["</x>"], "repetition_penalty": 1.1, **kw}


async def whole(fake_up: FakeUpstreamThread, kind: str, **kw: Any) -> dict[str, Any]:
    client = UpstreamClient(30)
    await client.start()
    try:
        return await post_completion(client, parse_upstream(f"{kind}+{fake_up.url}"), cbody(**kw))
    finally:
        await client.stop()


async def streamed(fake_up: FakeUpstreamThread, kind: str, **kw: Any) -> list[dict[str, Any]]:
    client = UpstreamClient(30)
    await client.start()
    up = parse_upstream(f"{kind}+{fake_up.url}")
    cb = cbody(stream=True, **kw)
    try:
        resp = await open_completion_stream(client, up, cb)
        try:
            return [orjson.loads(p) async for p in completion_events(resp, up, PROMPT, "m")]
        finally:
            resp.release()
    finally:
        await client.stop()


def ids_of(text: str, stopped: bool = True) -> list[int]:
    return [*text.encode(), *([EOT] if stopped else [])]


@pytest.mark.asyncio
async def test_sglang_generate_takes_input_ids_and_answers_as_completions(fake_up: FakeUpstreamThread) -> None:
    out = await whole(fake_up, "sglang", seed=7)
    sent = fake_up.fake.requests[-1]
    assert sent["input_ids"] == PROMPT and sent["return_logprob"] is True and sent["stream"] is False
    assert sent["sampling_params"] == {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32, "stop": ["</x>"],
                                       "repetition_penalty": 1.1, "sampling_seed": 7}
    [ch] = out["choices"]
    assert ch["text"] == "gen7" and ch["token_ids"] == ids_of("gen7") and ch["prompt_token_ids"] == PROMPT
    assert ch["finish_reason"] == "stop" and ch["stop_reason"] == EOT
    assert ch["logprobs"]["token_logprobs"] == [logprob(j) for j in range(5)]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


@pytest.mark.asyncio
async def test_sglang_cut_by_max_tokens_is_length_and_n_is_one_request_a_choice(fake_up: FakeUpstreamThread) -> None:
    out = await whole(fake_up, "sglang", max_tokens=2, n=2, seed=3)
    assert [c["finish_reason"] for c in out["choices"]] == ["length", "length"]
    assert [c["token_ids"] for c in out["choices"]] == [ids_of("ge", False), ids_of("ge", False)]
    assert [r["sampling_params"]["sampling_seed"] for r in fake_up.fake.requests[-2:]] == [3, 4]
    assert all("n" not in r["sampling_params"] for r in fake_up.fake.requests[-2:])


@pytest.mark.asyncio
@pytest.mark.parametrize("incremental", [False, True])
async def test_sglang_stream_gives_completion_chunks(fake_up: FakeUpstreamThread, incremental: bool) -> None:
    fake_up.fake.sglang_incremental = incremental
    chunks = await streamed(fake_up, "sglang", seed=12345)
    acc = AnswerAcc()
    for c in chunks:
        acc.add(c, "text")
    [ch] = acc.ordered()
    assert ch.text == "gen12345" and ch.token_ids == ids_of("gen12345") and ch.prompt_ids == PROMPT
    assert ch.logprobs == [logprob(j) for j in range(9)] and ch.finish_reason == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert sum(1 for c in chunks if c["choices"] and "prompt_token_ids" in c["choices"][0]) == 1


@pytest.mark.asyncio
async def test_llamacpp_completion_takes_a_token_array(fake_up: FakeUpstreamThread) -> None:
    out = await whole(fake_up, "llamacpp", seed=9, logprobs=2)
    sent = fake_up.fake.requests[-1]
    assert sent["prompt"] == PROMPT and sent["return_tokens"] is True and sent["n_probs"] == 2
    assert sent["n_predict"] == 32 and sent["repeat_penalty"] == 1.1 and sent["seed"] == 9
    assert sent["stop"] == ["</x>"] and sent["temperature"] == 0.7
    [ch] = out["choices"]
    assert ch["text"] == "gen9" and ch["token_ids"] == ids_of("gen9") and ch["prompt_token_ids"] == PROMPT
    assert ch["finish_reason"] == "stop" and ch["logprobs"]["token_logprobs"] == [logprob(j) for j in range(5)]
    cut = await whole(fake_up, "llamacpp", max_tokens=1)
    assert cut["choices"][0]["finish_reason"] == "length" and cut["choices"][0]["token_ids"] == [ord("g")]


@pytest.mark.asyncio
async def test_llamacpp_stream_ends_at_stop_true(fake_up: FakeUpstreamThread) -> None:
    chunks = await streamed(fake_up, "llamacpp", seed=42)
    acc = AnswerAcc()
    for c in chunks:
        acc.add(c, "text")
    [ch] = acc.ordered()
    assert ch.text == "gen42" and ch.token_ids == ids_of("gen42") and ch.prompt_ids == PROMPT
    assert ch.finish_reason == "stop" and ch.logprobs == [logprob(j) for j in range(6)]
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


@pytest.mark.asyncio
async def test_streamed_n_above_one_is_refused_before_any_call(fake_up: FakeUpstreamThread) -> None:
    before = len(fake_up.fake.requests)
    for kind in ("sglang", "llamacpp"):
        with pytest.raises(UpstreamFailure) as e:
            await streamed(fake_up, kind, n=2)
        assert e.value.status == 400 and "n > 1" in e.value.message
    assert len(fake_up.fake.requests) == before


@pytest.mark.asyncio
async def test_vllm_kinds_keep_v1_completions(fake_up: FakeUpstreamThread) -> None:
    out = await whole(fake_up, "vllm")
    assert fake_up.fake.requests[-1]["prompt"] == PROMPT and out["choices"][0]["text"] == "done0"
