"""rules.leases: which groups a batch may lease and which trajectories it keeps (CONTRACT §4)."""

from __future__ import annotations

from steplake.records import BatchFilters
from steplake.rules.leases import (
    batch_status,
    group_exclusion,
    group_servable,
    lease_active,
    lease_expired,
    trajectory_exclusion,
)


def test_expired_lease_is_served_again() -> None:
    assert group_servable("ready", None, 10.0)
    assert group_servable("leased", 9.0, 10.0)
    assert not group_servable("leased", 11.0, 10.0)
    assert not group_servable("collecting", None, 10.0) and not group_servable("consumed", 1.0, 10.0)
    assert lease_expired(9.0, 10.0) and not lease_expired(None, 10.0)


def test_active_lease_and_batch_status() -> None:
    assert lease_active("leased", 11.0, 10.0)
    assert not lease_active("leased", 9.0, 10.0) and not lease_active("ready", 11.0, 10.0)
    assert not lease_active("leased", None, 10.0)
    assert batch_status(None, 11.0, 10.0) == "leased"
    assert batch_status(None, 9.0, 10.0) == "expired"
    assert batch_status(5.0, 11.0, 10.0) == "consumed"


def excl(f: BatchFilters, reward: float | None = 1.0, quality: str = "unreviewed", trainable: int = 1,
         min_policy: int | None = 0, policy: int = 0) -> str | None:
    return trajectory_exclusion(f, policy, reward=reward, quality=quality, trainable=trainable, min_policy=min_policy)


def test_trajectory_filters() -> None:
    f = BatchFilters()
    assert excl(f) is None
    assert excl(f, trainable=0) == "untrainable"
    assert excl(BatchFilters(trainable_only=False), trainable=0) is None
    assert excl(f, reward=None) == "no_reward"
    assert excl(BatchFilters(reward_present=False), reward=None) is None
    assert excl(BatchFilters(min_reward=0.5), reward=0.4) == "below_min_reward"
    assert excl(BatchFilters(quality_in=["good"])) == "quality"
    assert excl(BatchFilters(quality_not_in=["bad"]), quality="bad") == "quality"
    assert excl(BatchFilters(max_staleness=2), min_policy=0, policy=3) == "stale"
    assert excl(BatchFilters(max_staleness=2), min_policy=1, policy=3) is None
    assert excl(BatchFilters(max_staleness=2), min_policy=None, policy=3) is None


def test_group_rules() -> None:
    assert group_exclusion(BatchFilters(), []) == "empty_group"
    assert group_exclusion(BatchFilters(), [1.0]) is None
    zv = BatchFilters(drop_zero_variance=True)
    assert group_exclusion(zv, [1.0]) == "zero_variance"
    assert group_exclusion(zv, [1.0, 1.0]) == "zero_variance"
    assert group_exclusion(zv, [1.0, 0.0]) is None
