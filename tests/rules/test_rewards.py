"""rules.rewards: the one reward combination, used by the reward runner and both stores."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from steplake.rewards import combine as public_combine
from steplake.rules.rewards import combine, latest_components, trajectory_reward


def test_one_combination_everywhere() -> None:
    assert public_combine is combine


def test_weighted_sum_and_defaults() -> None:
    assert combine({"a": 1.0, "b": 0.5}, {"a": 2.0, "b": -1.0}) == 1.5
    assert combine({"a": 1.0, "c": 9.0}, {"a": 2.0}) == 11.0  # unlisted → weight 1
    assert combine({"a": None, "b": 0.25}, {"b": 2.0}) == 0.5


def test_every_weight_zero_is_no_reward() -> None:
    assert combine({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}) is None
    comps = latest_components([("a", 1.0, "1"), ("b", 0.5, "1")])
    assert trajectory_reward(None, comps, {"a": 0.0, "b": 0.0}) is None
    assert trajectory_reward(None, comps, {"a": 0.0}) == 0.5
    assert trajectory_reward(None, {}, {}) is None


def test_explicit_reward_wins() -> None:
    comps = latest_components([("a", 1.0, "1")])
    assert trajectory_reward(0.0, comps, {}) == 0.0
    assert trajectory_reward(-2.0, {}, {"a": 0.0}) == -2.0


def test_latest_value_of_each_component_wins_in_first_seen_order() -> None:
    comps = latest_components([("a", 1.0, "1"), ("b", 2.0, "1"), ("a", 0.0, "2")])
    assert list(comps) == ["a", "b"]
    assert comps["a"] == {"value": 0.0, "version": "2"}
    assert trajectory_reward(None, comps, {}) == 2.0


def test_store_weights_use_the_runner_component_keys(tmp_path: Path) -> None:
    from steplake.rewards import ChannelRewards
    from steplake.rules.rewards import component_key
    from steplake.store import open_store

    fns = [{"name": "mypkg.rewards:style", "weight": 0.2}, {"name": "final_answer", "weight": 0.0},
           {"name": "pkg:judge", "component": "judge_v2", "weight": 2.0}]
    store = open_store(str(tmp_path / "pool.db"), SimpleNamespace(rewards={"channels": {"train": {"functions": fns}}}))
    assert ChannelRewards.model_validate({"functions": fns}).weights == {"style": 0.2, "final_answer": 0.0,
                                                                         "judge_v2": 2.0}
    assert store.reward_weights == {"style": 0.2, "final_answer": 0.0, "judge_v2": 2.0}  # type: ignore[attr-defined]
    assert component_key("a.b:c") == "c" and component_key("plain") == "plain" and component_key("x:y", "z") == "z"
