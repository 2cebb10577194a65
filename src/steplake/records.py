"""Records of the Data Pool (CONTRACT §1) and the request bodies of the HTTP API (CONTRACT §2).

Input models forbid unknown fields so typos fail loudly (422). Server-set fields of a step
(``continuity``, ``parent_step_id``, ``shared_prefix_len``, ``created_at``) are accepted on input so that
exported steps can be posted back, and ignored: the pool computes them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)

Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX, strict=True)]
RecordId = Annotated[str, Field(pattern=ID_PATTERN, description="1-128 chars: letters, digits, . _ : -")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]

Continuity = Literal["first", "clean", "realigned", "fork"]
TokenSource = Literal["upstream", "tokenizer", "text"]
TrajectoryStatus = Literal["open", "complete", "abandoned"]
GroupStatus = Literal["collecting", "ready", "leased", "consumed"]
Scope = Literal["agent", "trainer", "admin"]
FeedbackKind = Literal["thumbs", "rating", "comment", "correction", "preference"]
Recipe = Literal["grpo", "rloo", "reinforce_pp", "ppo", "dpo", "sft"]
Layout = Literal["step", "trajectory"]

REALIGN_TOLERANCE = 8
DEFAULT_CHANNEL = "train"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepResponse(BaseModel):
    """The model's answer as the agent received it."""

    model_config = ConfigDict(extra="allow")
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None


class Step(_In):
    """One LLM call: state (``prompt_ids``), action (``response_ids``), reward."""

    step_id: RecordId | None = None
    trajectory_id: RecordId
    group_id: RecordId | None = None
    step_index: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    channel: Name | None = None
    prompt_ids: list[StrictInt] = Field(default_factory=list)
    response_ids: list[StrictInt] = Field(default_factory=list)
    response_logprobs: list[float] | None = None
    token_source: TokenSource = "upstream"
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    response: StepResponse | None = None
    finish_reason: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=256)
    sampling: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    policy_version: Annotated[int, Field(ge=0)] | None = None
    reward: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    # server-set; accepted and ignored on input
    continuity: Continuity | None = None
    parent_step_id: str | None = None
    shared_prefix_len: int | None = None
    created_at: float | None = None

    @field_validator("prompt_ids", "response_ids")
    @classmethod
    def _int32(cls, ids: list[int], info: ValidationInfo) -> list[int]:
        if ids and (min(ids) < INT32_MIN or max(ids) > INT32_MAX):
            bad = next(i for i, v in enumerate(ids) if v < INT32_MIN or v > INT32_MAX)
            raise ValueError(f"{info.field_name}[{bad}] = {ids[bad]} is outside int32 [{INT32_MIN}, {INT32_MAX}]")
        return ids

    @model_validator(mode="after")
    def _check_lengths(self) -> Step:
        if self.response_logprobs is not None and len(self.response_logprobs) != len(self.response_ids):
            raise ValueError(
                f"response_logprobs has {len(self.response_logprobs)} values but response_ids has "
                f"{len(self.response_ids)}; they must align 1:1"
            )
        return self


class StepsIn(_In):
    steps: list[Step] = Field(min_length=1, max_length=10_000)

    @field_validator("steps")
    @classmethod
    def _need_index(cls, steps: list[Step]) -> list[Step]:
        for i, s in enumerate(steps):
            if s.step_index is None:
                raise ValueError(f"steps[{i}].step_index is required on POST /steps")
        return steps


class TrajectoryIn(_In):
    trajectory_id: RecordId | None = None
    group_id: RecordId | None = None
    group_size: Annotated[int, Field(ge=1, le=100_000)] | None = None
    channel: Name | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    session_key: StrictBool = Field(
        default=False, description="also mint an API key bound to this trajectory (answered once as api_key):"
        " gateway calls made with it land here without a path or headers")


class GroupIn(_In):
    n: Annotated[int, Field(ge=1, le=4096)]
    group_id: RecordId | None = None
    channel: Name | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CompleteIn(_In):
    reward: float | None = None
    metadata: dict[str, Any] | None = None


class RewardIn(_In):
    trajectory_id: RecordId | None = None
    step_id: RecordId | None = None
    name: Name
    value: float
    version: Annotated[str, Field(max_length=64)] = "1"
    details: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RewardIn:
        if (self.trajectory_id is None) == (self.step_id is None):
            raise ValueError("give exactly one of trajectory_id or step_id")
        return self


class CurationFilter(_In):
    channel: Name | None = None
    group_id: RecordId | None = None
    status: TrajectoryStatus | None = None
    quality: str | None = None
    trainable: bool | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    agent: str | None = None


class CurationIn(_In):
    step_ids: list[RecordId] | None = Field(default=None, max_length=100_000)
    trajectory_ids: list[RecordId] | None = Field(default=None, max_length=100_000)
    filter: CurationFilter | None = None
    quality: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    trainable: bool | None = None
    tags_add: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    tags_remove: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    note: Annotated[str, Field(max_length=10_000)] | None = None
    reviewer: Annotated[str, Field(max_length=128)] | None = None

    @model_validator(mode="after")
    def _target_and_change(self) -> CurationIn:
        if self.step_ids is None and self.trajectory_ids is None and self.filter is None:
            raise ValueError("give step_ids, trajectory_ids or filter")
        if all(v is None for v in (self.quality, self.trainable, self.tags_add, self.tags_remove, self.note)):
            raise ValueError("give at least one change: quality, trainable, tags_add, tags_remove or note")
        return self


class FeedbackIn(_In):
    step_id: RecordId | None = None
    trajectory_id: RecordId | None = None
    kind: FeedbackKind
    value: Any = None
    comment: Annotated[str, Field(max_length=10_000)] | None = None
    author: Annotated[str, Field(max_length=128)] | None = None

    @model_validator(mode="after")
    def _check(self) -> FeedbackIn:
        if (self.trajectory_id is None) == (self.step_id is None):
            raise ValueError("give exactly one of trajectory_id or step_id")
        v = self.value
        if self.kind == "thumbs" and v not in ("up", "down", 1, -1, True, False):
            raise ValueError("thumbs value must be 'up' or 'down' (or 1 / -1)")
        if self.kind == "rating" and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ValueError("rating value must be a number")
        if self.kind == "preference" and not (
            isinstance(v, dict) and isinstance(v.get("chosen"), str) and isinstance(v.get("rejected"), str)
        ):
            raise ValueError("preference value must be {'chosen': id, 'rejected': id}")
        if self.kind == "correction" and not isinstance(v, str):
            raise ValueError("correction value must be the corrected answer text")
        return self


class BatchFilters(_In):
    trainable_only: bool = True
    max_staleness: Annotated[int, Field(ge=0)] | None = None
    reward_present: bool = True
    quality_in: list[str] | None = None
    quality_not_in: list[str] | None = None
    min_reward: float | None = None
    drop_zero_variance: bool = False


class BatchIn(_In):
    channel: Name = DEFAULT_CHANNEL
    groups: Annotated[int, Field(ge=1, le=4096)] = 1
    recipe: Recipe | None = None
    layout: Layout = "step"
    filters: BatchFilters = Field(default_factory=BatchFilters)
    wait_seconds: Annotated[float, Field(ge=0, le=60)] = 0
    lease_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 300
    dry_run: bool = False


class PolicyIn(_In):
    version: Annotated[int, Field(ge=0, le=INT32_MAX)]
    weights_path: Annotated[str, Field(max_length=4096)] | None = None
    note: Annotated[str, Field(max_length=10_000)] | None = None


class KeyIn(_In):
    scope: Scope
    name: Annotated[str, Field(max_length=128)] | None = None
    # a session key: {trajectory_id, group_id?, channel?, metadata?}, scope "agent" only (gateway rule 3)
    binding: dict[str, Any] | None = None


__all__ = [
    "Step", "StepsIn", "StepResponse", "TrajectoryIn", "GroupIn", "CompleteIn", "RewardIn", "CurationIn",
    "CurationFilter", "FeedbackIn", "BatchIn", "BatchFilters", "PolicyIn", "KeyIn", "Continuity",
    "TokenSource", "TrajectoryStatus", "GroupStatus", "Scope", "Recipe", "Layout", "INT32_MIN", "INT32_MAX",
    "ID_RE", "REALIGN_TOLERANCE", "DEFAULT_CHANNEL",
]
