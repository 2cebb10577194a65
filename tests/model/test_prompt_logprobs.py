"""vLLM's ``prompt_logprobs``: in-process (``LocalModel.prompt_logprobs``) and over HTTP (the shared
``model_server``): shape, ranks, agreement with ``compute_logprobs`` and the sampled logprobs, 400s."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import torch

from steplake.errors import BadRequestError
from steplake.model import SamplingParams

pytestmark = pytest.mark.slow

SEA = [{"role": "user", "content": "Write a poem about the sea."}]


def post(url: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=300)


def scored(url: str, ids: list[int], k: int) -> list[Any]:
    resp = post(url, "/v1/completions", {"prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": k})
    assert resp.status_code == 200, resp.text
    [choice] = resp.json()["choices"]
    return list(choice["prompt_logprobs"])


def test_engine_prompt_logprobs_match_compute_logprobs_and_ranks(local_model: Any) -> None:
    prompt = local_model.render_chat(SEA)
    gen = local_model.generate(prompt, SamplingParams(max_tokens=24, temperature=1.0, seed=5))
    ids = [*prompt, *gen.token_ids]
    positions = local_model.prompt_logprobs(ids, 4)
    assert len(positions) == len(ids) and positions[0] is None
    assert all(p is not None and p.token_id == t for p, t in zip(positions[1:], ids[1:], strict=True))
    again = local_model.compute_logprobs(prompt, gen.token_ids)
    mine = [p.logprob for p in positions[len(prompt):]]
    assert max(abs(a - b) for a, b in zip(again, mine, strict=True)) < 1e-5
    assert max(abs(a - b) for a, b in zip(gen.logprobs, mine, strict=True)) < 1e-3
    dist = torch.log_softmax(local_model._scoring_logits(ids[:-1], len(ids) - 1), dim=-1)
    for row, pos in zip(dist, positions[1:], strict=True):
        assert pos.rank == int((row >= row[pos.token_id]).sum())
        assert [t for t, _ in pos.top] == torch.topk(row, 4).indices.tolist()
        assert all(a[1] >= b[1] for a, b in zip(pos.top, pos.top[1:], strict=False))
    assert local_model.prompt_logprobs(ids[:1], 3) == [None]
    with pytest.raises(BadRequestError):
        local_model.prompt_logprobs(ids, 21)


def test_completions_prompt_logprobs_shape(model_server: str) -> None:
    ids = post(model_server, "/tokenize", {"prompt": "The capital of France is Paris."}).json()["tokens"]
    k3 = scored(model_server, ids, 3)
    assert len(k3) == len(ids) and k3[0] is None
    for tid, pos in zip(ids[1:], k3[1:], strict=True):
        own = pos[str(tid)]
        assert list(pos)[0] == str(tid) and set(own) == {"logprob", "rank", "decoded_token"}
        by_rank = sorted(pos.values(), key=lambda e: e["rank"])
        expected = [1, 2, 3] if own["rank"] <= 3 else [1, 2, 3, own["rank"]]
        assert [e["rank"] for e in by_rank] == expected
        assert all(a["logprob"] >= b["logprob"] for a, b in zip(by_rank, by_rank[1:], strict=False))
    paris = next(p[str(t)] for t, p in zip(ids[1:], k3[1:], strict=True) if "Paris" in p[str(t)]["decoded_token"])
    assert paris["decoded_token"] == " Paris"
    k0 = scored(model_server, ids, 0)
    assert k0[0] is None and all(list(p) == [str(t)] for t, p in zip(ids[1:], k0[1:], strict=True))
    assert [p[str(t)] for t, p in zip(ids[1:], k0[1:], strict=True)] == \
           [p[str(t)] for t, p in zip(ids[1:], k3[1:], strict=True)]
    plain = post(model_server, "/v1/completions", {"prompt": ids, "max_tokens": 1}).json()
    assert plain["choices"][0]["prompt_logprobs"] is None


def test_prompt_logprobs_agree_with_local_model_and_sampling(model_server: str, local_model: Any) -> None:
    served = post(model_server, "/v1/chat/completions", {
        "messages": SEA, "max_tokens": 32, "temperature": 1.0, "seed": 11, "logprobs": True,
        "return_token_ids": True, "prompt_logprobs": 2}).json()
    prompt, ids = served["prompt_token_ids"], served["choices"][0]["token_ids"]
    sampled = [e["logprob"] for e in served["choices"][0]["logprobs"]["content"]]
    chat_scored = served["prompt_logprobs"]
    assert len(chat_scored) == len(prompt) and chat_scored[0] is None
    assert all(str(t) in p and len(p) in (2, 3) for t, p in zip(prompt[1:], chat_scored[1:], strict=True))
    rescored = scored(model_server, [*prompt, *ids], 0)
    for t, again, first in zip(prompt[1:], rescored[1:len(prompt)], chat_scored[1:], strict=True):
        assert abs(again[str(t)]["logprob"] - first[str(t)]["logprob"]) < 1e-4  # a longer pass: float noise
    mine = [rescored[i][str(t)]["logprob"] for i, t in enumerate(ids, len(prompt))]
    local = local_model.compute_logprobs(prompt, ids)
    assert max(abs(a - b) for a, b in zip(local, mine, strict=True)) < 1e-4
    assert max(abs(a - b) for a, b in zip(sampled, mine, strict=True)) < 1e-3


def test_prompt_logprobs_per_prompt_and_choice_and_via_sdk(model_server: str) -> None:
    a = post(model_server, "/tokenize", {"prompt": "One two three"}).json()["tokens"]
    b = post(model_server, "/tokenize", {"prompt": "Blue sky over the hills"}).json()["tokens"]
    out = openai.OpenAI(base_url=model_server + "/v1", api_key="x", timeout=300, max_retries=0).completions.create(
        model="m", prompt=[a, b], max_tokens=1, n=2, temperature=1.0, seed=1, extra_body={"prompt_logprobs": 1})
    lists = [c.model_extra["prompt_logprobs"] for c in out.choices]  # type: ignore[index]
    assert [len(x) for x in lists] == [len(a), len(a), len(b), len(b)]
    assert lists[0] == lists[1] and lists[2] == lists[3]
    assert all(str(t) in p for t, p in zip(b[1:], lists[2][1:], strict=True))


@pytest.mark.parametrize("path,extra", [
    ("/v1/completions", {"prompt_logprobs": -1}),
    ("/v1/completions", {"prompt_logprobs": 21}),
    ("/v1/completions", {"prompt_logprobs": 2.5}),
    ("/v1/completions", {"prompt_logprobs": 2.0}),
    ("/v1/completions", {"prompt_logprobs": "2"}),
    ("/v1/completions", {"prompt_logprobs": True}),
    ("/v1/completions", {"prompt_logprobs": 1, "stream": True}),
    ("/v1/chat/completions", {"prompt_logprobs": -3}),
    ("/v1/chat/completions", {"prompt_logprobs": 100}),
    ("/v1/chat/completions", {"prompt_logprobs": 1, "stream": True}),
])
def test_bad_prompt_logprobs_are_openai_400s(model_server: str, path: str, extra: dict[str, Any]) -> None:
    body = {"prompt": [1, 2, 3]} if path == "/v1/completions" else {"messages": SEA}
    resp = post(model_server, path, {**body, "max_tokens": 1, **extra})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert "prompt_logprobs" in err["message"] and err["type"] and err["code"]


def test_streams_leave_out_prompt_logprobs_zero(model_server: str) -> None:
    with httpx.stream("POST", model_server + "/v1/completions", timeout=300,
                      json={"prompt": [1, 2, 3], "max_tokens": 2, "prompt_logprobs": 0, "stream": True}) as resp:
        assert resp.status_code == 200
        body = resp.read().decode()
    assert "prompt_logprobs" not in body and body.rstrip().endswith("data: [DONE]")
