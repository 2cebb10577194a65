"""Records of the Data Pool (CONTRACT §1) and the request bodies of the HTTP API (CONTRACT §2).

Input models forbid unknown fields so typos fail loudly (422). Server-set fields of a step
(``continuity``, ``parent_step_id``, ``shared_prefix_len``, ``created_at``) are accepted on input so that
exported steps can be posted back, and ignored: the pool computes them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
INT64_MAX = 2**63 - 1
MAX_STEP_INDEX = INT32_MAX - 1  # PostgreSQL keeps index + 1 (the next index) in an INTEGER
MAX_JSON_DEPTH = 64  # nesting of any free JSON field (metadata, messages, details ...)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"  # pydantic's (Rust) regex: ``$`` is the end of the text
# Python's ``$`` also matches before a final newline: \A...\Z, so ``ID_RE.match`` accepts exactly what ID_PATTERN does
ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}\Z")
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}\Z")
NO_NUL_PATTERN = r"^[^\x00]*$"
NUL_MESSAGE = "must not contain a NUL character (\\u0000)"
_CONTAINERS = frozenset((dict, list, tuple))


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH, allow_nul: bool = True) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored, or None: objects and arrays nested deeper than
    ``max_depth`` (``{}`` is depth 1), or, unless ``allow_nul``, a NUL character in a key or a string.
    Iterative, so no depth can reach Python's (or orjson's) recursion limit; a container's members are
    typed in one C-level pass, so a long array of numbers (token ids) costs next to nothing."""
    if isinstance(value, str):
        return NUL_MESSAGE if not allow_nul and "\x00" in value else None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, dict):
            if not allow_nul and any(isinstance(k, str) and "\x00" in k for k in obj):
                return NUL_MESSAGE
            items: Any = obj.values()
        elif isinstance(obj, list | tuple):
            items = obj
        else:
            continue
        kinds = set(map(type, items))
        if not allow_nul and str in kinds and any(type(v) is str and "\x00" in v for v in items):
            return NUL_MESSAGE
        if kinds.isdisjoint(_CONTAINERS):
            continue
        if depth >= max_depth:
            return f"nested deeper than {max_depth} levels of objects and arrays"
        stack.extend((v, depth + 1) for v in items if type(v) in _CONTAINERS)
    return None


def _bounded(value: Any) -> Any:
    problem = json_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _clean(value: Any) -> Any:
    problem = json_problem(value, allow_nul=False)
    if problem:
        raise ValueError(problem)
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


NoNul = AfterValidator(_no_nul)
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX, strict=True)]
RecordId = Annotated[str, Field(pattern=ID_PATTERN, description="1-128 chars: letters, digits, . _ : -")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
PolicyVersion = Annotated[int, Field(ge=0, le=INT32_MAX)]
Label = Annotated[str, Field(min_length=1, max_length=64), NoNul]  # quality, tags
# free JSON: at most MAX_JSON_DEPTH deep; NUL is fine inside (stored as JSON text, escaped)
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded)]
JsonObjects = Annotated[list[dict[str, Any]], AfterValidator(_bounded)]
AnyJson = Annotated[Any, AfterValidator(_bounded)]
# metadata and bindings: also no NUL in any key or string (``agent`` and filters read them as text columns)
Metadata = Annotated[dict[str, Any], AfterValidator(_clean)]

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
    # NaN and ±infinity (also as "NaN", "Infinity", "1e309" strings) are refused in every float field
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    step_index: Annotated[int, Field(ge=0, le=MAX_STEP_INDEX)] | None = None
    channel: Name | None = None
    prompt_ids: list[StrictInt] = Field(default_factory=list)
    response_ids: list[StrictInt] = Field(default_factory=list)
    response_logprobs: list[float] | None = None
    token_source: TokenSource = "upstream"
    messages: JsonObjects | None = None
    tools: JsonObjects | None = None
    response: StepResponse | None = None
    finish_reason: Annotated[str, Field(max_length=64), NoNul] | None = None
    model: Annotated[str, Field(max_length=256), NoNul] | None = None
    sampling: JsonObject | None = None
    usage: JsonObject | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    policy_version: PolicyVersion | None = None
    reward: float | None = None
    metadata: Metadata = Field(default_factory=dict)
    provenance: JsonObject = Field(default_factory=dict)
    # server-set; accepted and ignored on input
    continuity: Continuity | None = None
    parent_step_id: str | None = None
    shared_prefix_len: int | None = None
    created_at: float | None = None

    @field_validator("response", mode="before")
    @classmethod
    def _response_depth(cls, value: Any) -> Any:
        return _bounded(value)

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
    metadata: Metadata = Field(default_factory=dict)
    session_key: StrictBool = Field(
        default=False, description="also mint an API key bound to this trajectory (answered once as api_key):"
        " gateway calls made with it land here without a path or headers")


class GroupIn(_In):
    n: Annotated[int, Field(ge=1, le=4096)]
    group_id: RecordId | None = None
    channel: Name | None = None
    metadata: Metadata = Field(default_factory=dict)


class CompleteIn(_In):
    reward: float | None = None
    metadata: Metadata | None = None


class RewardIn(_In):
    trajectory_id: RecordId | None = None
    step_id: RecordId | None = None
    name: Name
    value: float
    version: Annotated[str, Field(max_length=64), NoNul] = "1"
    details: JsonObject | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RewardIn:
        if (self.trajectory_id is None) == (self.step_id is None):
            raise ValueError("give exactly one of trajectory_id or step_id")
        return self


FilterText = Annotated[str, Field(max_length=128, pattern=NO_NUL_PATTERN)]
FilterNumber = Annotated[float, Field(ge=-1e300, le=1e300)]
FilterEpoch = Annotated[float, Field(ge=0, le=1e11)]


class TrajectoryFilter(_In):
    """Which trajectories, defined once: the query parameters of ``GET /trajectories``, ``filter`` of ``POST
    /curation``, the dashboard's curate-all, exports and reward runs (``steplake.filters`` parses a mapping of
    them and adds the exports' batch-style ones). Strings are coerced (``"true"``, ``"0.5"``, ``"3"``)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    channel: FilterText | None = None
    group_id: FilterText | None = None
    status: TrajectoryStatus | None = None
    quality: FilterText | None = None
    trainable: bool | None = None
    agent: FilterText | None = None
    min_reward: FilterNumber | None = None
    max_reward: FilterNumber | None = None
    continuity: Continuity | None = Field(
        default=None, description="fork / realigned: trajectories holding at least one such step")
    policy_version: PolicyVersion | None = None
    since: FilterEpoch | None = Field(default=None, description="Created at or after (epoch seconds).")
    until: FilterEpoch | None = Field(default=None, description="Created at or before (epoch seconds).")
    q: Annotated[str, Field(min_length=1, max_length=1000, pattern=NO_NUL_PATTERN)] | None = Field(
        default=None, description="Text searched in messages (no NUL characters).")
    has_reward: bool | None = None

    def query(self) -> dict[str, Any]:
        """The fields given, as the stores read them (``Store.list_trajectories``, ``trajectory_ids_matching``)."""
        return {k: v for k in TrajectoryFilter.model_fields if (v := getattr(self, k)) is not None}


CurationFilter = TrajectoryFilter  # its former name


class CurationIn(_In):
    step_ids: list[RecordId] | None = Field(default=None, max_length=100_000)
    trajectory_ids: list[RecordId] | None = Field(default=None, max_length=100_000)
    filter: TrajectoryFilter | None = None
    quality: Label | None = None
    trainable: bool | None = None
    tags_add: list[Label] | None = None
    tags_remove: list[Label] | None = None
    note: Annotated[str, Field(max_length=10_000), NoNul] | None = None
    reviewer: Annotated[str, Field(max_length=128), NoNul] | None = None

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
    value: AnyJson = None
    comment: Annotated[str, Field(max_length=10_000), NoNul] | None = None
    author: Annotated[str, Field(max_length=128), NoNul] | None = None

    @model_validator(mode="after")
    def _check(self) -> FeedbackIn:
        if (self.trajectory_id is None) == (self.step_id is None):
            raise ValueError("give exactly one of trajectory_id or step_id")
        v = self.value
        if self.kind == "thumbs" and v not in ("up", "down", 1, -1, True, False):
            raise ValueError("thumbs value must be 'up' or 'down' (or 1 / -1)")
        if self.kind == "rating" and (isinstance(v, bool) or not isinstance(v, int | float)
                                      or not math.isfinite(v)):
            raise ValueError("rating value must be a finite number")
        if self.kind == "preference" and not (
            isinstance(v, dict) and isinstance(v.get("chosen"), str) and isinstance(v.get("rejected"), str)
        ):
            raise ValueError("preference value must be {'chosen': id, 'rejected': id}")
        if self.kind == "correction" and not isinstance(v, str):
            raise ValueError("correction value must be the corrected answer text")
        return self


class BatchFilters(_In):
    trainable_only: bool = True
    max_staleness: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    reward_present: bool = True
    quality_in: list[Annotated[str, Field(max_length=1000), NoNul]] | None = None
    quality_not_in: list[Annotated[str, Field(max_length=1000), NoNul]] | None = None
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
    version: PolicyVersion
    weights_path: Annotated[str, Field(max_length=4096), NoNul] | None = None
    note: Annotated[str, Field(max_length=10_000), NoNul] | None = None


class KeyIn(_In):
    scope: Scope
    name: Annotated[str, Field(max_length=128), NoNul] | None = None
    # a session key: {trajectory_id, group_id?, channel?, metadata?}, scope "agent" only (gateway rule 3)
    binding: Metadata | None = None


__all__ = [
    "Step", "StepsIn", "StepResponse", "TrajectoryIn", "GroupIn", "CompleteIn", "RewardIn", "CurationIn",
    "CurationFilter", "TrajectoryFilter", "FeedbackIn", "BatchIn", "BatchFilters", "PolicyIn", "KeyIn", "Continuity",
    "TokenSource", "TrajectoryStatus", "GroupStatus", "Scope", "Recipe", "Layout", "INT32_MIN", "INT32_MAX",
    "INT64_MAX", "MAX_STEP_INDEX", "MAX_JSON_DEPTH", "ID_RE", "NAME_RE", "NO_NUL_PATTERN", "REALIGN_TOLERANCE",
    "DEFAULT_CHANNEL", "json_problem", "NoNul", "Label", "Metadata", "JsonObject", "PolicyVersion",
]
