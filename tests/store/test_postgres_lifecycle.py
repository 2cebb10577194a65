"""Retention and pruning (pool/lifecycle.py) on every Store: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

import time
from typing import Any

import pytest

from steplake.errors import ValidationError
from steplake.pool.lifecycle import DAY, parse_retention, prune
from steplake.records import BatchIn, RewardIn, Step

P = list(range(100, 120))


def _traj(store: Any, tid: str, channel: str = "train", group: str | None = None, complete: bool = True) -> None:
    store.append_steps([Step(step_id=f"{tid}-0", trajectory_id=tid, group_id=group, channel=channel, step_index=0,
                             prompt_ids=P, response_ids=[1, 2])])
    if complete:
        store.complete_trajectory(tid, 1.0)


def test_parse_retention() -> None:
    assert parse_retention("train=30, val=12h,*=90d") == {"train": 30.0, "val": 0.5, "*": 90.0}
    assert parse_retention({"train": 7}) == {"train": 7.0}
    assert parse_retention(None) == {}
    for bad in ("train", "train=-1", "=3", "train=soon"):
        with pytest.raises(ValidationError):
            parse_retention(bad)


def test_prune_keeps_open_leased_and_recent(store: Any) -> None:
    store.create_group("G", 1, "train", {}, ["leased"])
    _traj(store, "leased", group="G")
    assert store.select_batch(BatchIn(groups=1, lease_seconds=DAY)).groups[0]["group_id"] == "G"
    _traj(store, "old")
    store.add_reward(RewardIn(trajectory_id="old", name="x", value=1.0))
    _traj(store, "open", complete=False)
    _traj(store, "v1", channel="val")
    _traj(store, "x1", channel="other")
    steps_before = store.stats()["steps"]
    later = time.time() + 2 * 3600
    policy = parse_retention("train=1h,val=1d,*=30m")
    assert prune(store, policy, now=later, dry_run=True) == {"train": 1, "val": 0, "other": 1}
    assert store.get_trajectory("old") is not None
    assert prune(store, policy, now=later) == {"train": 1, "val": 0, "other": 1}
    assert store.get_trajectory("old") is None and store.get_step("old-0") is None
    assert store.list_rewards(trajectory_id="old") == []
    assert store.get_trajectory("x1") is None
    for kept in ("open", "leased", "v1"):
        assert store.get_trajectory(kept, with_steps=False) is not None
    assert store.stats()["steps"] == steps_before - 2
    assert prune(store, {"train": 30}, now=time.time()) == {"train": 0}  # nothing is old yet


def test_prune_measures_age_from_last_change(store: Any) -> None:
    _traj(store, "t")
    now = time.time()
    t = store.get_trajectory("t", with_steps=False)
    # retention just below / above the trajectory's age at `now`
    age_days = (now - t["updated_at"]) / DAY
    assert prune(store, {"train": age_days * 2 + 1e-6}, now=now) == {"train": 0}
    assert prune(store, {"train": age_days / 2}, now=now) == {"train": 1}
