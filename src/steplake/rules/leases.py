"""Lease decisions and batch selection rules (CONTRACT §4).

A batch leases ready groups for ``lease_seconds``; a group whose lease expired unacknowledged is served
again (to the next batch that asks), an acknowledged one is consumed. Within a chosen group each complete
trajectory must pass the batch's filters; a group left empty, or without reward variance when
``drop_zero_variance`` asks for it, is skipped. Exclusions are counted by reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..records import BatchFilters

BatchStatus = Literal["consumed", "leased", "expired"]


def lease_expired(lease_expires_at: float | None, now: float) -> bool:
    """A lease that ran out before ``now`` (its group may be leased again)."""
    return lease_expires_at is not None and lease_expires_at < now


def lease_active(status: str, lease_expires_at: float | None, now: float) -> bool:
    """A group held by a batch's lease that has not run out (pruning leaves it alone)."""
    return status == "leased" and (lease_expires_at or 0.0) > now


def group_servable(status: str, lease_expires_at: float | None, now: float) -> bool:
    """A group a batch may lease: ready, or leased with an expired lease."""
    return status == "ready" or (status == "leased" and lease_expired(lease_expires_at, now))


def batch_status(acked_at: float | None, lease_expires_at: float, now: float) -> BatchStatus:
    if acked_at is not None:
        return "consumed"
    return "leased" if lease_expires_at > now else "expired"


def trajectory_exclusion(filters: BatchFilters, policy: int, *, reward: float | None, quality: str | None,
                         trainable: object, min_policy: int | None) -> str | None:
    """The reason a complete trajectory is kept out of a batch under ``filters``, or None."""
    f = filters
    if f.trainable_only and not trainable:
        return "untrainable"
    if f.quality_in is not None and quality not in f.quality_in:
        return "quality"
    if f.quality_not_in is not None and quality in f.quality_not_in:
        return "quality"
    if f.reward_present and reward is None:
        return "no_reward"
    if f.min_reward is not None and (reward is None or reward < f.min_reward):
        return "below_min_reward"
    if f.max_staleness is not None and min_policy is not None and policy - min_policy > f.max_staleness:
        return "stale"
    return None


def group_exclusion(filters: BatchFilters, rewards: Sequence[float | None]) -> str | None:
    """The reason a group is skipped, given the rewards of the trajectories it kept, or None."""
    if not rewards:
        return "empty_group"
    if filters.drop_zero_variance and (len(rewards) < 2 or len(set(rewards)) == 1):
        return "zero_variance"
    return None


__all__ = ["BatchStatus", "batch_status", "group_exclusion", "group_servable", "lease_active", "lease_expired",
           "trajectory_exclusion"]
