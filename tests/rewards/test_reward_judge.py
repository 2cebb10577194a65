"""LLM judges against a tiny fake OpenAI-compatible server (parsing and robustness)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from steplake.rewards import ChannelRewards, RewardEnv, Rollout, score_group, score_trajectory
from steplake.rewards.judge import LlmJudge, LlmRanker, parse_ranking, parse_score, ranking_scores
from tests.rewards.reward_testkit import make_ctx, serve

prompts: list[dict[str, Any]] = []


def fake_openai(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """``/{mode}/v1/...``: the mode picks the judge's behaviour."""
    mode = path.split("/")[1]
    if path.endswith("/models"):
        return 200, {"object": "list", "data": [{"id": "judge-model", "object": "model"}]}
    if mode == "down":
        return 503, {"error": {"message": "no"}}
    prompts.append(body)
    user = body["messages"][-1]["content"]
    if mode == "good":
        text = "Ranking: 3 > 1 > 2" if "Rank all" in user else "Correct and clear.\nScore: 7/10"
    elif mode == "partial":
        text = "I think 2 is best. Ranking: 2"
    else:
        text = "What a lovely day."
    return 200, {
        "id": "x",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(fake_openai) as url:
        yield url


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Score: 7/10", 0.7),
        ("blah\nscore = 3 out of 5", 0.6),
        ("**Score:** 9", 0.9),
        ("8", 0.8),
        ("I'd give it 4/5.", 0.8),
        ("Score: 12/10", 1.0),
        ("no idea", None),
    ],
)
def test_parse_score(text: str, value: float | None) -> None:
    assert parse_score(text) == (pytest.approx(value) if value is not None else None)


def test_parse_ranking_and_scores() -> None:
    assert parse_ranking("Ranking: 3 > 1 > 2", 3) == [2, 0, 1]
    assert parse_ranking("blah\n2 > 3 > 1", 3) == [1, 2, 0]
    assert parse_ranking("Ranking: 3 > 3 > 9 > 1", 3) == [2, 0]
    assert parse_ranking("Ranking: none", 3) is None
    assert ranking_scores([2, 0, 1], 3) == [0.5, 0.0, 1.0]
    assert ranking_scores([1], 3) == [0.25, 1.0, 0.25]
    assert ranking_scores([1, 0], 3) == [0.5, 1.0, 0.0]
    assert ranking_scores([0], 1) == [1.0]


async def test_pointwise_judge(server: str) -> None:
    ctx = make_ctx("\\boxed{42}", 42, params={"base_url": f"{server}/good/v1", "rubric": "Be exact."})
    result = await LlmJudge().score(ctx)
    assert result.value == pytest.approx(0.7) and "Score: 7/10" in result.details["raw"]
    sent = prompts[-1]
    assert sent["model"] == "judge-model" and sent["temperature"] == 0.0
    assert (
        "Be exact." in sent["messages"][-1]["content"]
        and "Reference answer:\n42" in sent["messages"][-1]["content"]
    )


async def test_judge_uses_the_server_upstream_from_env(server: str) -> None:
    ctx = make_ctx("x")
    env = RewardEnv(llm_base_url=f"{server}/good/v1", llm_model="served")
    channel = ChannelRewards.model_validate({"functions": [{"name": "llm_judge"}]})
    results = await score_trajectory(channel, replace(ctx, env=env))
    assert results[0].value == pytest.approx(0.7) and prompts[-1]["model"] == "served"


async def test_judge_failures_are_recorded(server: str) -> None:
    garbled = await LlmJudge().score(make_ctx("x", params={"base_url": f"{server}/garbage/v1"}))
    assert garbled.value is None and "no parseable score" in (garbled.error or "")
    assert garbled.details["raw"] == "What a lovely day."
    down = await LlmJudge().score(make_ctx("x", params={"base_url": f"{server}/down/v1"}))
    assert down.value is None and "HTTP 503" in (down.error or "")
    channel = ChannelRewards.model_validate({"functions": [{"name": "llm_judge"}]})
    missing = await score_trajectory(channel, make_ctx("x"))
    assert missing[0].value is None and "base_url" in (missing[0].error or "")


def _group(n: int, params: dict[str, Any]) -> list[Any]:
    ctxs = [make_ctx(f"answer {i}", 42, tid=f"t{i}", params=params) for i in range(n)]
    rollouts = [c.rollout for c in ctxs]
    return [replace(c, group=[r for r in rollouts if r.trajectory_id != c.trajectory_id]) for c in ctxs]


async def test_group_ranking(server: str) -> None:
    ctxs = _group(3, {"base_url": f"{server}/good/v1"})
    results = await LlmRanker().score_group(ctxs)
    assert [r.value for r in results] == [0.5, 0.0, 1.0]
    assert results[0].details["ranking"] == ["t2", "t0", "t1"]
    user = prompts[-1]["messages"][-1]["content"]
    assert "Response 1:\nanswer 0" in user and "Response 3:\nanswer 2" in user
    single = await LlmRanker().score(ctxs[2])  # ranks ctx.group_rollouts(), keeps its own score
    assert single.value == 1.0


async def test_group_ranking_partial_and_garbage(server: str) -> None:
    partial = await LlmRanker().score_group(_group(3, {"base_url": f"{server}/partial/v1"}))
    assert [r.value for r in partial] == [0.25, 1.0, 0.25] and partial[0].details["partial"] is True
    garbage = await LlmRanker().score_group(_group(3, {"base_url": f"{server}/garbage/v1"}))
    assert all(r.value is None and "ranking" in (r.error or "") for r in garbage)
    alone = await LlmRanker().score_group(_group(1, {"base_url": f"{server}/good/v1"}))
    assert alone[0].value == pytest.approx(0.7) and alone[0].details["fallback"] == "pointwise"


async def test_score_group_runs_group_functions_once(server: str) -> None:
    channel = ChannelRewards.model_validate(
        {
            "functions": [
                {"name": "llm_rank", "params": {"base_url": f"{server}/good/v1"}},
                {"name": "final_answer"},
            ]
        }
    )
    before = len(prompts)
    ctxs = [make_ctx("\\boxed{42}" if i == 0 else "no", 42, tid=f"t{i}") for i in range(3)]
    results = await score_group(channel, ctxs)
    assert len(prompts) == before + 1
    assert [[r.value for r in rs] for rs in results] == [[0.5, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert isinstance(ctxs[0].rollout, Rollout)
