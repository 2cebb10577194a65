"""The reward protocol: what a reward function receives and what it returns.

Every reward function is an object with a ``name``, a ``version`` and an ``async def score(ctx)``
returning a :class:`RewardResult`. A plain function ``(ctx) -> float | RewardResult`` (sync or async)
becomes one through :func:`reward_function` or the registry's ``module:function`` import.

A result's ``value`` is ``None`` when the function abstains (nothing to score, e.g. no feedback yet) or
fails (``error`` set); such a component never contributes to the combined scalar.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steplake.errors import ConfigError
from steplake.types import Json

JSON = Json  # the reward modules' name for it


class RewardConfigError(ConfigError):
    """A reward configuration is invalid: unknown function, bad import path, bad parameters."""

    code = "reward_config_error"


@dataclass(frozen=True)
class RewardResult:
    """One function's verdict on one trajectory; ``value`` is None on abstention or failure."""

    value: float | None
    details: JSON = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def failure(cls, error: str, **details: Any) -> RewardResult:
        return cls(value=None, details=details, error=error)

    @classmethod
    def abstain(cls, reason: str, **details: Any) -> RewardResult:
        return cls(value=None, details={"abstained": reason, **details})


@dataclass(frozen=True)
class RewardEnv:
    """What the running server lends reward functions: its own upstream for LLM judges."""

    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    http_timeout_s: float = 60.0


@dataclass(frozen=True)
class Rollout:
    """One trajectory with its steps ordered by ``step_index``."""

    trajectory: JSON
    steps: list[JSON]

    @property
    def trajectory_id(self) -> str:
        return str(self.trajectory.get("trajectory_id", ""))


@dataclass(frozen=True)
class RewardContext:
    """Everything a reward function may look at for one trajectory.

    ``group`` holds the group's *other* rollouts (for group-relative judges); ``feedback`` the human
    feedback records attached to this trajectory or its steps; ``params`` the function's configured
    parameters (set per function by the runner).
    """

    trajectory: JSON
    steps: list[JSON]
    group: Sequence[Rollout] = ()
    feedback: Sequence[JSON] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    env: RewardEnv = field(default_factory=RewardEnv)

    def __post_init__(self) -> None:
        ordered = sorted(self.steps, key=lambda s: int(s.get("step_index", 0)))
        object.__setattr__(self, "steps", ordered)

    @property
    def trajectory_id(self) -> str:
        return str(self.trajectory.get("trajectory_id", ""))

    @property
    def rollout(self) -> Rollout:
        return Rollout(self.trajectory, self.steps)

    def group_rollouts(self) -> list[Rollout]:
        """This rollout and the group's others, ordered by trajectory id (stable across calls)."""
        mine = self.rollout
        others = [r for r in self.group if r.trajectory_id != mine.trajectory_id]
        return sorted([mine, *others], key=lambda r: r.trajectory_id)

    @property
    def ground_truth(self) -> Any:
        """``params.ground_truth``, else ``trajectory.metadata.ground_truth``, else the first step's."""
        if "ground_truth" in self.params:
            return self.params["ground_truth"]
        return ground_truth_of(self.trajectory, self.steps)


def ground_truth_of(trajectory: JSON, steps: Sequence[JSON]) -> Any:
    meta = trajectory.get("metadata") or {}
    if meta.get("ground_truth") is not None:
        return meta["ground_truth"]
    if steps:
        return (steps[0].get("metadata") or {}).get("ground_truth")
    return None


def content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts (OpenAI parts / Anthropic blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def final_text(steps: Sequence[JSON]) -> str:
    """The final assistant answer: the content of the last step's response ("" when none)."""
    if not steps:
        return ""
    response = steps[-1].get("response") or {}
    return content_text(response.get("content"))


def task_text(steps: Sequence[JSON]) -> str:
    """The task as the agent posed it: the first user message of the first step."""
    if not steps:
        return ""
    for msg in steps[0].get("messages") or []:
        if isinstance(msg, dict) and msg.get("role") == "user":
            return content_text(msg.get("content"))
    return ""


@runtime_checkable
class RewardFunction(Protocol):
    """A named, versioned scorer of one trajectory."""

    name: str
    version: str

    async def score(self, ctx: RewardContext) -> RewardResult: ...


@runtime_checkable
class GroupRewardFunction(RewardFunction, Protocol):
    """A group-relative scorer: scores all rollouts of a group at once (``group_relative = True``)."""

    group_relative: bool

    async def score_group(self, ctxs: Sequence[RewardContext]) -> list[RewardResult]: ...


RawReward = Callable[[RewardContext], "float | int | bool | RewardResult | None"]
AsyncRawReward = Callable[[RewardContext], Awaitable["float | int | bool | RewardResult | None"]]


def as_result(raw: object) -> RewardResult:
    """Coerce what a plain function returned into a :class:`RewardResult`."""
    if isinstance(raw, RewardResult):
        return raw
    if raw is None:
        return RewardResult.abstain("function returned None")
    if isinstance(raw, bool | int | float):
        return RewardResult(float(raw))
    raise TypeError(f"a reward function must return a number or RewardResult, got {type(raw).__name__}")


class FunctionReward:
    """Wraps a plain ``(ctx) -> float | RewardResult`` function (sync or async) as a RewardFunction.

    Sync functions run in a worker thread when ``in_thread`` (the default for user code), so a slow one
    does not stall the server's event loop; built-ins are cheap and run inline.
    """

    def __init__(
        self,
        fn: RawReward | AsyncRawReward,
        *,
        name: str | None = None,
        version: str | None = None,
        in_thread: bool = True,
        check_params: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.fn = fn
        self.name: str = str(name or getattr(fn, "reward_name", None) or getattr(fn, "__name__", "reward"))
        self.version = str(version or getattr(fn, "reward_version", None) or "1")
        self._in_thread = in_thread
        self._check = check_params
        self.__doc__ = fn.__doc__

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`RewardConfigError` for parameters this function cannot use."""
        if self._check is not None:
            self._check(params)

    async def score(self, ctx: RewardContext) -> RewardResult:
        if inspect.iscoroutinefunction(self.fn):
            return as_result(await self.fn(ctx))
        if self._in_thread:
            return as_result(await asyncio.to_thread(self.fn, ctx))
        return as_result(self.fn(ctx))

    def __repr__(self) -> str:
        return f"FunctionReward({self.name!r}, version={self.version!r})"


def reward_function(
    name: str | None = None, version: str = "1"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator giving a plain reward function its registry name and version.

    >>> @reward_function("short_answer", version="2")
    ... def short_answer(ctx): return 1.0 if len(final_text(ctx.steps)) < 100 else 0.0
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.reward_name = name or fn.__name__  # type: ignore[attr-defined]
        fn.reward_version = version  # type: ignore[attr-defined]
        return fn

    return mark
