from __future__ import annotations

import asyncio

import pytest

from steplake.rewards import (
    ChannelRewards,
    RewardRegistry,
    RewardResult,
    combine,
    combine_results,
    load_reward_spec,
    score_trajectory,
)
from tests.rewards.reward_testkit import make_ctx


def test_combine_weighted_sum() -> None:
    assert combine({"a": 1.0, "b": 0.5}) == 1.5
    assert combine({"a": 1.0, "b": 0.5}, {"a": 2.0, "b": -1.0}) == 1.5
    assert combine({"a": 1.0, "b": 0.5, "c": 9.0}, {"a": 2.0}) == 11.5  # unlisted → weight 1
    assert combine({"a": 1.0, "c": 9.0}, {"a": 1.0}, default_weight=0.0) == 1.0
    assert combine({"a": 1.0, "c": 9.0}, {"c": 0.0}) == 1.0
    assert combine({"a": None, "b": 0.25}, {"a": 1.0, "b": 2.0}) == 0.5  # missing skipped
    assert combine({"a": None}) is None and combine({}) is None
    assert combine({"a": 1.0}, {"a": 0.0}) is None


async def test_score_and_combine_a_channel() -> None:
    spec = load_reward_spec(
        {
            "channels": {
                "train": {
                    "functions": [
                        {"name": "final_answer", "weight": 1.0},
                        {
                            "name": "length_penalty",
                            "weight": 0.5,
                            "params": {"max_tokens": 10, "target_tokens": 0},
                        },
                        {"name": "tool_call_success", "weight": 1.0},
                    ]
                }
            }
        }
    )
    results = await score_trajectory(spec, make_ctx("\\boxed{42}", 42))  # 5 tokens → -0.5
    assert [r.component for r in results] == ["final_answer", "length_penalty", "tool_call_success"]
    assert combine_results(results) == pytest.approx(1.0 - 0.25)
    assert "params" not in results[1].details  # never stored: they may hold secrets (a hash names them)
    record = results[1].to_record("t")
    assert record["details"]["config_sha256"] == spec.channels["train"].functions[1].config_sha256
    assert record["details"]["function"] == "length_penalty" and record["version"]
    assert all(r.duration_ms >= 0 for r in results)


async def test_timeouts_and_nan_are_recorded() -> None:
    reg = RewardRegistry(builtins=False)

    async def sleepy(ctx: object) -> float:
        await asyncio.sleep(5)
        return 1.0

    reg.register(sleepy)
    reg.register(lambda ctx: float("nan"), name="nan")
    reg.register(lambda ctx: RewardResult.failure("rm down"), name="down")
    channel = ChannelRewards.model_validate(
        {"functions": [{"name": "sleepy", "timeout_s": 0.05}, {"name": "nan"}, {"name": "down"}]}
    )
    results = await score_trajectory(channel, make_ctx("x"), registry=reg)
    assert [r.value for r in results] == [None, None, None]
    assert "timed out" in (results[0].error or "")
    assert "NaN" in (results[1].error or "")
    assert results[2].error == "rm down"


def test_component_names_and_group_detection() -> None:
    from steplake.rewards import RewardConfigError, needs_group

    with pytest.raises(RewardConfigError, match="component names"):
        load_reward_spec(
            {"channels": {"train": {"functions": [{"name": "final_answer", "component": "a b"}]}}}
        )
    spec = load_reward_spec(
        {
            "channels": {
                "train": {
                    "functions": [
                        {"name": "final_answer"},
                        {"name": "llm_rank", "params": {"base_url": "http://127.0.0.1:9/v1"}},
                    ]
                },
                "val": {"functions": [{"name": "final_answer"}]},
            }
        }
    )
    assert needs_group(spec.for_channel("train")) and not needs_group(spec.for_channel("val"))
