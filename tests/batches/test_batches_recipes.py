"""Recipe numbers against hand computations (CONTRACT §4)."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steplake.batches import (
    RECIPES,
    UnknownRecipeError,
    apply_recipe,
    drop_zero_variance,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    whiten,
)
from steplake.errors import SteplakeError
from tests.batches.batches_pool import single_step_group, step, trajectory


def advantages(result_groups: list[dict]) -> dict[str, float | None]:
    return {t["trajectory_id"]: t["advantage"] for g in result_groups for t in g["trajectories"]}


# ---------------------------------------------------------------------------------------------- grpo


def test_grpo_two_right_two_wrong() -> None:
    # mean 0.5, std(ddof=1) = sqrt(4 * 0.25 / 3) = 0.5773502692; A = ±0.5 / (0.5773502692 + 1e-6)
    res = apply_recipe("grpo", [single_step_group("g", [1, 0, 0, 1])])
    adv = advantages(res.groups)
    expected = {"g-t0": 0.8660239038, "g-t1": -0.8660239038, "g-t2": -0.8660239038, "g-t3": 0.8660239038}
    for tid, a in expected.items():
        assert adv[tid] == pytest.approx(a, abs=1e-6)


def test_grpo_three_values_and_edge_groups() -> None:
    # [3, 1, 2]: mean 2, std(ddof=1) = 1 -> [1/(1+1e-6), -1/(1+1e-6), 0]
    assert grpo_advantages([3, 1, 2]) == pytest.approx([0.999999, -0.999999, 0.0], abs=1e-6)
    assert grpo_advantages([5.0]) == [0.0]  # a group of one
    assert grpo_advantages([1, 1, 1]) == [0.0, 0.0, 0.0]
    assert grpo_advantages([]) == []


def test_every_step_carries_the_trajectory_advantage() -> None:
    t0 = trajectory("a", 1.0, [step("a0", "a", 0, [1], [2]), step("a1", "a", 1, [1, 2, 7], [3])])
    t1 = trajectory("b", 0.0, [step("b0", "b", 0, [1], [4])])
    res = apply_recipe("grpo", [{"group_id": "g", "trajectories": [t0, t1]}])
    # [1, 0]: mean 0.5, std(ddof=1) = sqrt(0.5) = 0.7071067812
    a, b = res.groups[0]["trajectories"]
    assert a["advantage"] == pytest.approx(0.5 / 0.7071077812, abs=1e-6)
    assert [s["advantage"] for s in a["steps"]] == [a["advantage"]] * 2
    assert b["steps"][0]["advantage"] == pytest.approx(-0.7071057812, abs=1e-6)


def test_input_is_not_modified() -> None:
    groups = [single_step_group("g", [1, 0])]
    before = copy.deepcopy(groups)
    apply_recipe("grpo", groups)
    assert groups == before


def test_null_rewards_are_excluded_and_counted() -> None:
    res = apply_recipe("grpo", [single_step_group("g", [1, None, 0]), single_step_group("h", [None])])
    assert [t["trajectory_id"] for g in res.groups for t in g["trajectories"]] == ["g-t0", "g-t2"]
    assert res.excluded == {"reward_missing": 2}
    assert res.summary["n_groups"] == 1 and res.summary["n_trajectories"] == 2


# ---------------------------------------------------------------------------------------------- rloo


def test_rloo_leave_one_out() -> None:
    # [1, 0, 0, 1]: A_0 = 1 - (0 + 0 + 1) / 3 = 2/3, A_1 = 0 - (1 + 0 + 1) / 3 = -2/3
    adv = advantages(apply_recipe("rloo", [single_step_group("g", [1, 0, 0, 1])]).groups)
    assert [adv[f"g-t{i}"] for i in range(4)] == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3], abs=1e-9)
    # [3, 1, 2]: 3 - 1.5, 1 - 2.5, 2 - 2
    assert rloo_advantages([3, 1, 2]) == pytest.approx([1.5, -1.5, 0.0], abs=1e-9)
    assert rloo_advantages([7]) == [0.0]


# ---------------------------------------------------------------------------------------------- reinforce++


def test_reinforce_pp_group_baseline_then_batch_whitening() -> None:
    # centered: [1, 0] -> [0.5, -0.5]; [2, 2, 5] (mean 3) -> [-1, -1, 2]
    # batch: mean 0, var(ddof=1) = (0.25 + 0.25 + 1 + 1 + 4) / 4 = 1.625, std = 1.2747548784
    res = apply_recipe("reinforce_pp", [single_step_group("g", [1, 0]), single_step_group("h", [2, 2, 5])])
    adv = advantages(res.groups)
    d = 1.2747548784 + 1e-6
    expected = {"g-t0": 0.5 / d, "g-t1": -0.5 / d, "h-t0": -1 / d, "h-t1": -1 / d, "h-t2": 2 / d}
    for tid, a in expected.items():
        assert adv[tid] == pytest.approx(a, abs=1e-6)
    assert adv["h-t2"] == pytest.approx(1.5689279, abs=1e-6)


def test_reinforce_pp_edges() -> None:
    assert reinforce_pp_advantages([[4.0]]) == [[0.0]]
    assert reinforce_pp_advantages([]) == []
    assert whiten([2.0]) == [0.0]
    # whiten [1, 3]: mean 2, std(ddof=1) = sqrt(2) = 1.4142135624
    assert whiten([1, 3]) == pytest.approx([-1 / 1.4142145624, 1 / 1.4142145624], abs=1e-6)


# ---------------------------------------------------------------------------------------------- ppo


def test_ppo_sets_no_advantage_and_keeps_step_rewarded_trajectories() -> None:
    t_step_reward_only = trajectory("s", None, [step("s0", "s", 0, [1], [2, 3], reward=0.5)])
    t_nothing = trajectory("n", None, [step("n0", "n", 0, [1], [2, 3])])
    t_outcome = trajectory("o", 1.0, [step("o0", "o", 0, [1], [4])])
    res = apply_recipe("ppo", [{"group_id": "g", "trajectories": [t_step_reward_only, t_nothing, t_outcome]}])
    assert advantages(res.groups) == {"s": None, "o": None}
    assert all(s["advantage"] is None for g in res.groups for t in g["trajectories"] for s in t["steps"])
    assert res.excluded == {"reward_missing": 1}


# ---------------------------------------------------------------------------------------------- dpo


def test_dpo_best_against_worst_with_deterministic_ties() -> None:
    groups = [
        single_step_group("g", [0, 1, 1, 0]),
        single_step_group("flat", [1, 1]),
        single_step_group("one", [1]),
    ]
    res = apply_recipe("dpo", groups)
    assert len(res.pairs) == 1
    pair = res.pairs[0]
    # ties: smallest trajectory_id wins on both sides
    assert pair["chosen"]["trajectory_id"] == "g-t1" and pair["rejected"]["trajectory_id"] == "g-t0"
    assert (pair["chosen_reward"], pair["rejected_reward"], pair["source"]) == (1.0, 0.0, "reward")
    assert pair["group_id"] == "g" and pair["prompt_ids"] == [1, 2, 3]
    assert pair["chosen"]["steps"][0]["response_ids"] == [11, 2]
    assert res.excluded == {"no_pair": 2}
    # input order does not matter
    reversed_group = dict(groups[0], trajectories=groups[0]["trajectories"][::-1])
    again = apply_recipe("dpo", [reversed_group]).pairs[0]
    assert (again["chosen"]["trajectory_id"], again["rejected"]["trajectory_id"]) == ("g-t1", "g-t0")
    assert advantages(res.groups)["g-t0"] is None


def test_dpo_prompt_is_common_prefix() -> None:
    a = trajectory("a", 1.0, [step("a0", "a", 0, [1, 2, 3, 4], [9])])
    b = trajectory("b", 0.0, [step("b0", "b", 0, [1, 2, 5], [8])])
    pair = apply_recipe("dpo", [{"group_id": "g", "trajectories": [a, b]}]).pairs[0]
    assert pair["prompt_ids"] == [1, 2]


def test_dpo_preference_feedback_pairs() -> None:
    group = single_step_group("g", [1, 1, None])  # no reward pair: equal rewards
    feedback = [
        {"kind": "preference", "trajectory_id": "g-t1", "value": {"chosen": "g-t1", "rejected": "g-t0"}},
        {"kind": "preference", "trajectory_id": "g-t1", "value": {"rejected": "g-t0"}},  # duplicate
        {"kind": "preference", "step_id": "g-t2-s0", "value": {"rejected": "g-t0-s0"}, "feedback_id": 7},
        {"kind": "preference", "trajectory_id": "g-t1", "value": {"rejected": "missing"}},
        {"kind": "preference", "trajectory_id": "g-t1", "value": "g-t0"},
        {"kind": "thumbs", "trajectory_id": "g-t1", "value": 1},
    ]
    res = apply_recipe("dpo", [group], feedback=feedback)
    assert len(res.pairs) == 2
    whole, steps = res.pairs
    assert whole["source"] == "preference" and "step_id" not in whole["chosen"]
    assert (whole["chosen"]["trajectory_id"], whole["rejected"]["trajectory_id"]) == ("g-t1", "g-t0")
    assert (whole["chosen_reward"], whole["rejected_reward"]) == (1.0, 1.0)
    assert (steps["chosen"]["step_id"], steps["rejected"]["step_id"]) == ("g-t2-s0", "g-t0-s0")
    assert steps["chosen"]["trajectory_id"] == "g-t2" and steps["feedback_id"] == 7
    assert [s["step_id"] for s in steps["chosen"]["steps"]] == ["g-t2-s0"]
    assert res.excluded == {"no_pair": 1, "preference_unresolved": 2}
    assert res.summary["n_pairs"] == 2


# ---------------------------------------------------------------------------------------------- sft


def test_sft_default_keeps_group_best_when_positive() -> None:
    g = single_step_group("g", [1, 0.5, 1, None])
    g["trajectories"][2]["curation"] = {"quality": "bad", "trainable": True}
    res = apply_recipe("sft", [g, single_step_group("zero", [0, 0])])
    assert [t["trajectory_id"] for gr in res.groups for t in gr["trajectories"]] == ["g-t0"]
    assert res.excluded == {"sft_below_min_reward": 3, "sft_quality_bad": 1, "reward_missing": 1}
    assert res.groups[0]["trajectories"][0]["advantage"] is None


def test_sft_explicit_min_reward() -> None:
    res = apply_recipe("sft", [single_step_group("g", [1, 0.5, 0.2, -1])], min_reward=0.5)
    assert [t["trajectory_id"] for gr in res.groups for t in gr["trajectories"]] == ["g-t0", "g-t1"]
    assert res.excluded == {"sft_below_min_reward": 2}
    # an explicit threshold may be <= 0
    res = apply_recipe("sft", [single_step_group("g", [0, -1])], min_reward=0)
    assert [t["trajectory_id"] for gr in res.groups for t in gr["trajectories"]] == ["g-t0"]


# ---------------------------------------------------------------------------------------------- shared


def test_drop_zero_variance() -> None:
    groups = [
        single_step_group("a", [1, 0]),
        single_step_group("b", [1, 1, 1]),
        single_step_group("c", [1, None]),
    ]
    kept, dropped = drop_zero_variance(groups)
    assert [g["group_id"] for g in kept] == ["a"] and dropped == 5
    res = apply_recipe("grpo", groups, drop_zero_variance_groups=True)
    assert [g["group_id"] for g in res.groups] == ["a"]
    # c loses its null-reward trajectory first, then b (3) and c (1) are dropped
    assert res.excluded == {"reward_missing": 1, "zero_variance": 4}


def test_summary_and_unknown_recipe() -> None:
    res = apply_recipe("rloo", [single_step_group("g", [1, 0, 0.5])])
    assert res.summary == {
        "recipe": "rloo",
        "n_groups": 1,
        "n_trajectories": 3,
        "n_steps": 3,
        "n_response_tokens": 6,
        "n_pairs": 0,
        "reward_mean": 0.5,
        "reward_min": 0.0,
        "reward_max": 1.0,
    }
    assert set(res.to_dict()) == {"groups", "pairs", "excluded", "summary"}
    assert RECIPES == ("grpo", "rloo", "reinforce_pp", "ppo", "dpo", "sft")
    with pytest.raises(UnknownRecipeError, match="unknown recipe 'ppo2'"):
        apply_recipe("ppo2", [])
    err = UnknownRecipeError("x")
    assert isinstance(err, ValueError) and isinstance(err, SteplakeError)
    assert (err.status, err.code) == (422, "unknown_recipe")


# ---------------------------------------------------------------------------------------------- properties

rewards_st = st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=2, max_size=16)


@given(rewards_st)
def test_grpo_advantages_are_centered_and_scaled(rewards: list[float]) -> None:
    adv = grpo_advantages(rewards)
    assert math.fsum(adv) == pytest.approx(0.0, abs=1e-6)
    if max(rewards) - min(rewards) > 1e-3:
        # sum of squares = (n - 1) * (std / (std + eps))^2 (ddof=1), close to n - 1 unless std is tiny
        std = statistics.stdev(rewards)
        expected = (len(rewards) - 1) * (std / (std + 1e-6)) ** 2
        assert math.fsum(a * a for a in adv) == pytest.approx(expected, rel=1e-6)


@given(rewards_st)
def test_rloo_advantages_sum_to_zero_and_preserve_order(rewards: list[float]) -> None:
    adv = rloo_advantages(rewards)
    assert math.fsum(adv) == pytest.approx(0.0, abs=1e-6)
    for i in range(len(rewards) - 1):
        if rewards[i] > rewards[i + 1] + 1e-9:
            assert adv[i] > adv[i + 1]


def test_result_is_plain_json() -> None:
    import json

    feedback = [{"kind": "preference", "trajectory_id": "g-t0", "value": {"rejected": "g-t1"}}]
    for recipe in RECIPES:
        res = apply_recipe(recipe, [single_step_group("g", [1, 0, 0.5])], feedback=feedback)
        assert json.loads(json.dumps(res.to_dict(), allow_nan=False)) == res.to_dict()
