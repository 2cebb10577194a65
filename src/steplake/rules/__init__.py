"""The domain rules of CONTRACT §3 and §4, pure and database-free: the ground floor both stores call.

``continuity`` (how a step relates to its parent), ``status`` (trajectory status changes, the idle rule,
group readiness), ``rewards`` (the one reward combination), ``curation`` (tag and metadata merges),
``leases`` (which groups a batch may lease, which trajectories it keeps). This package imports only the
standard library, numpy, ``steplake.errors`` and ``steplake.records``: never the store, the pool, the gateway
or the API, so each rule has one copy and a fast unit test (tests/rules/).
"""

from __future__ import annotations

from .continuity import classify, common_prefix_len
from .curation import CurationState, apply_curation, curation_change, merge_metadata, merge_tags
from .leases import (
    batch_status,
    group_exclusion,
    group_servable,
    lease_active,
    lease_expired,
    trajectory_exclusion,
)
from .rewards import combine, component_key, latest_components, trajectory_reward
from .status import (
    check_step_fits,
    completed_at,
    group_ready,
    group_status_after,
    idle_cutoff,
    idle_outcome,
    status_deltas,
)

__all__ = [
    "CurationState", "apply_curation", "batch_status", "check_step_fits", "classify", "combine", "component_key",
    "common_prefix_len", "completed_at", "curation_change", "group_exclusion", "group_ready",
    "group_servable", "group_status_after", "idle_cutoff", "idle_outcome", "latest_components",
    "lease_active", "lease_expired", "merge_metadata", "merge_tags", "status_deltas", "trajectory_exclusion",
    "trajectory_reward",
]
