"""Types shared by every layer (the ground floor: imports nothing from steplake).

``Json`` is a JSON object as it travels between the layers (request bodies, records, answers). The
``*Out`` TypedDicts declare the records the stores answer with (CONTRACT §1; every key listed, ``total=False``
where a key is only present in some answers; tests/test_seams.py checks both stores against them). The Store
protocol's signatures still say ``Json``: a TypedDict is not a ``dict[str, Any]`` for mypy, so typing them there
means typing the row mappers, ``Page`` and the Pool's answers too.
"""

from __future__ import annotations

from typing import Any, TypedDict

Json = dict[str, Any]


class CurationOut(TypedDict):
    quality: str | None
    trainable: bool
    tags: list[str]
    note: str | None
    reviewer: str | None
    updated_at: float | None


class StepOut(TypedDict, total=False):
    """A step (``GET /steps/{id}``, batches, exports); ids are absent with ``fields=meta``."""

    step_id: str
    trajectory_id: str
    group_id: str
    step_index: int
    channel: str
    policy_version: int
    continuity: str
    parent_step_id: str | None
    shared_prefix_len: int
    prompt_len: int
    response_len: int
    token_source: str
    finish_reason: str | None
    model: str | None
    reward: float | None
    latency_ms: float | None
    created_at: float
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float] | None
    messages: list[Json] | None
    tools: list[Json] | None
    response: Json | None
    sampling: Json | None
    usage: Json | None
    metadata: Json
    provenance: Json
    curation: CurationOut


class TrajectoryOut(TypedDict, total=False):
    """A trajectory (``GET /trajectories/{id}``: with ``steps`` unless ``steps=false``)."""

    trajectory_id: str
    group_id: str
    channel: str
    status: str
    reward: float | None
    reward_components: Json
    n_steps: int
    metadata: Json
    created_at: float
    updated_at: float
    completed_at: float | None
    curation: CurationOut
    n_tokens: int
    n_realigned: int
    n_fork: int
    policy_versions: list[int]
    last_finish_reason: str | None
    steps: list[StepOut]


class GroupOut(TypedDict, total=False):
    """A group (``GET /groups/{id}``: with ``trajectory_ids``)."""

    group_id: str
    channel: str
    size: int
    n_trajectories: int
    n_complete: int
    n_abandoned: int
    status: str
    metadata: Json
    created_at: float
    updated_at: float
    ready_at: float | None
    lease_batch_id: str | None
    lease_expires_at: float | None
    consumed_at: float | None
    trajectory_ids: list[str]


class PolicyOut(TypedDict):
    """The published policy version (0 and nulls before the first publish)."""

    version: int
    weights_path: str | None
    note: str | None
    created_at: float | None


class EventOut(TypedDict):
    """One entry of the event log (``GET /events``)."""

    id: int
    kind: str
    data: Any
    at: float


__all__ = ["Json", "CurationOut", "StepOut", "TrajectoryOut", "GroupOut", "PolicyOut", "EventOut"]
