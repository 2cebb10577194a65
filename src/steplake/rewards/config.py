"""Reward configuration per channel, running it, and combining components into the scalar.

Config shape (the ``rewards`` section of the settings file)::

    {"channels": {
        "train": {"functions": [
            {"name": "final_answer", "weight": 1.0},
            {"name": "length_penalty", "weight": 0.2, "params": {"max_tokens": 2048, "target_tokens": 1536}},
            {"name": "mypkg.rewards:style", "component": "style", "version": "3", "timeout_s": 30}
        ]},
        "*": {"functions": [{"name": "final_answer"}]}}}

``name`` is a built-in or ``module:function``; ``component`` is the key the value is stored under
(default: the function's name); ``version`` overrides the function's own version (bump it when you
change params or code and re-run: values are stored per (component, version), old ones are kept);
channel ``"*"`` applies to channels not listed.

Records: each component's record names its ``function``, ``version`` and ``config_sha256`` (a hash of the
function's configuration with secrets masked, rewards/secrets.py); parameters are never stored, and the
configured secret values are scrubbed from whatever a function returns or raises.

Combination: ``reward = Σ weight_c · value_c`` over components that have a value (abstentions and
failures are skipped; components without a configured weight count with weight 1, weight 0 switches
one off); ``None`` when no weighted component has a value (every weight 0 included). The rule lives in
steplake/rules/rewards.py, which the stores use too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steplake.rewards.base import JSON, RewardConfigError, RewardContext, RewardFunction, RewardResult
from steplake.rewards.registry import RewardRegistry, default_registry
from steplake.rewards.secrets import config_sha256, scrub, secret_values
from steplake.rules.rewards import combine, component_key

_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    component: str | None = None
    weight: float = 1.0
    version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=120.0, gt=0)

    @property
    def key(self) -> str:
        return component_key(self.name, self.component)

    @property
    def config_sha256(self) -> str:
        """Hash of this configuration, secrets masked: which configuration produced a stored value."""
        return config_sha256(self.name, self.key, self.version, self.params)

    def secrets(self, ctx: RewardContext | None = None) -> set[str]:
        """The secret values this function may see (its params, the server's judge key)."""
        found = secret_values(self.params)
        if ctx is not None and ctx.env.llm_api_key:
            found.add(ctx.env.llm_api_key)
        return found


class ChannelRewards(BaseModel):
    model_config = ConfigDict(extra="forbid")

    functions: list[FunctionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_components(self) -> ChannelRewards:
        keys = [f.key for f in self.functions]
        bad = [k for k in keys if not _COMPONENT_RE.fullmatch(k)]
        if bad:
            raise ValueError(
                f"reward component names {bad} must be 1-64 of A-Z a-z 0-9 . _ : - (set 'component')"
            )
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate reward components {dupes}: give each a distinct 'component'")
        return self

    @property
    def weights(self) -> dict[str, float]:
        return {f.key: f.weight for f in self.functions}


class RewardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: dict[str, ChannelRewards] = Field(default_factory=dict)

    def for_channel(self, channel: str) -> ChannelRewards:
        """The channel's functions, else those of ``"*"``, else none."""
        return self.channels.get(channel) or self.channels.get("*") or ChannelRewards()


def load_reward_spec(raw: Mapping[str, Any] | None, registry: RewardRegistry | None = None) -> RewardSpec:
    """Validate a config dict and resolve every function (so bad names fail at startup)."""
    try:
        spec = RewardSpec.model_validate(raw or {})
    except ValueError as exc:
        raise RewardConfigError(f"invalid reward configuration: {exc}") from exc
    reg = registry or default_registry()
    for channel in spec.channels.values():
        for fn in channel.functions:
            reg.check(fn.name, fn.params)
    return spec


@dataclass(frozen=True)
class ComponentResult:
    """One component's outcome; ``to_record`` gives the ``POST /rewards`` shape."""

    component: str
    function: str
    version: str
    weight: float
    value: float | None
    details: JSON = field(default_factory=dict)
    error: str | None = None
    duration_ms: float = 0.0
    config_sha256: str | None = None

    def to_record(self, trajectory_id: str) -> JSON:
        details = dict(self.details)
        if self.error:
            details["error"] = self.error
        details.setdefault("function", self.function)
        if self.config_sha256:
            details.setdefault("config_sha256", self.config_sha256)
        return {
            "trajectory_id": trajectory_id,
            "name": self.component,
            "value": self.value,
            "version": self.version,
            "details": details,
        }


def combine_results(results: Sequence[ComponentResult]) -> float | None:
    """:func:`combine` over results with their configured weights."""
    return combine({r.component: r.value for r in results}, {r.component: r.weight for r in results})


def _finish(spec: FunctionSpec, fn: RewardFunction, result: RewardResult, started: float,
            secrets: set[str]) -> ComponentResult:
    value = result.value
    error = result.error
    if value is not None and value != value:  # NaN is a failure, never a value
        value, error = None, error or "reward function returned NaN"
    return ComponentResult(
        component=spec.key,
        function=spec.name,
        version=spec.version or fn.version,
        weight=spec.weight,
        value=None if error else value,
        details=scrub(dict(result.details), secrets),
        error=scrub(error, secrets),
        duration_ms=(time.perf_counter() - started) * 1000.0,
        config_sha256=spec.config_sha256,
    )


def _failed(spec: FunctionSpec, version: str, exc: BaseException, started: float,
            secrets: set[str]) -> ComponentResult:
    message = (
        f"timed out after {spec.timeout_s} s"
        if isinstance(exc, TimeoutError)
        else f"{type(exc).__name__}: {exc}"
    )
    return ComponentResult(
        component=spec.key,
        function=spec.name,
        version=version,
        weight=spec.weight,
        value=None,
        details={},
        error=scrub(message, secrets),
        duration_ms=(time.perf_counter() - started) * 1000.0,
        config_sha256=spec.config_sha256,
    )


async def run_function(
    spec: FunctionSpec, ctx: RewardContext, registry: RewardRegistry | None = None
) -> ComponentResult:
    """Run one configured function; every exception (config, timeout, bug) becomes a recorded error."""
    started = time.perf_counter()
    version = spec.version or "?"
    secrets = spec.secrets(ctx)
    try:
        fn = (registry or default_registry()).resolve(spec.name)
        version = spec.version or fn.version
        scoped = dataclasses.replace(ctx, params=spec.params)
        result = await asyncio.wait_for(fn.score(scoped), spec.timeout_s)
        return _finish(spec, fn, result, started, secrets)
    except Exception as exc:
        return _failed(spec, version, exc, started, secrets)


async def score_trajectory(
    spec: RewardSpec | ChannelRewards, ctx: RewardContext, *, registry: RewardRegistry | None = None
) -> list[ComponentResult]:
    """Run every function configured for the trajectory's channel, concurrently; never raises."""
    channel = (
        spec.for_channel(str(ctx.trajectory.get("channel") or "train"))
        if isinstance(spec, RewardSpec)
        else spec
    )
    return list(await asyncio.gather(*(run_function(f, ctx, registry) for f in channel.functions)))


async def _run_group_function(
    spec: FunctionSpec, ctxs: Sequence[RewardContext], registry: RewardRegistry | None
) -> list[ComponentResult]:
    started = time.perf_counter()
    secrets = spec.secrets(ctxs[0] if ctxs else None)
    try:
        fn = (registry or default_registry()).resolve(spec.name)
    except RewardConfigError as exc:
        return [_failed(spec, spec.version or "?", exc, started, secrets) for _ in ctxs]
    score_group = getattr(fn, "score_group", None)
    if not getattr(fn, "group_relative", False) or score_group is None:
        return list(await asyncio.gather(*(run_function(spec, c, registry) for c in ctxs)))
    try:
        scoped = [dataclasses.replace(c, params=spec.params) for c in ctxs]
        results = await asyncio.wait_for(score_group(scoped), spec.timeout_s)
        if len(results) != len(ctxs):
            raise RuntimeError(f"score_group returned {len(results)} results for {len(ctxs)} trajectories")
        return [_finish(spec, fn, r, started, secrets) for r in results]
    except Exception as exc:
        return [_failed(spec, spec.version or fn.version, exc, started, secrets) for _ in ctxs]


async def score_group(
    spec: RewardSpec | ChannelRewards,
    ctxs: Sequence[RewardContext],
    *,
    registry: RewardRegistry | None = None,
) -> list[list[ComponentResult]]:
    """Score all trajectories of a group (same channel): group-relative functions run once for the
    group, the others per trajectory. Returns one result list per context, in order; never raises."""
    if not ctxs:
        return []
    channel = (
        spec.for_channel(str(ctxs[0].trajectory.get("channel") or "train"))
        if isinstance(spec, RewardSpec)
        else spec
    )
    per_function = await asyncio.gather(*(_run_group_function(f, ctxs, registry) for f in channel.functions))
    return [[results[i] for results in per_function] for i in range(len(ctxs))]


def needs_group(spec: ChannelRewards, registry: RewardRegistry | None = None) -> bool:
    """True when a channel has a group-relative function (score it only once its group is ready)."""
    reg = registry or default_registry()
    return any(getattr(reg.resolve(f.name), "group_relative", False) for f in spec.functions)
