"""Find reward functions by built-in name or by ``module:attribute`` import path.

An imported attribute may be: an object following :class:`RewardFunction` (used as is), a class
(instantiated without arguments), or a plain function ``(ctx) -> float | RewardResult`` (sync or async),
wrapped with its ``@reward_function`` name and version, else its ``__name__`` and version ``"1"``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from steplake.rewards.base import FunctionReward, RewardConfigError, RewardFunction
from steplake.rewards.builtins import builtin_rewards
from steplake.rewards.http_rm import HttpRewardModel
from steplake.rewards.judge import LlmJudge, LlmRanker

ALIASES = {"http_reward_model": "http_rm", "judge": "llm_judge", "llm_judge_group": "llm_rank"}


class RewardRegistry:
    """Name → reward function. Built-ins are registered on construction; import paths resolve lazily
    and are cached."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._functions: dict[str, RewardFunction] = {}
        if builtins:
            for name, fn in builtin_rewards().items():
                self.register(fn, name=name)
            for obj in (HttpRewardModel(), LlmJudge(), LlmRanker()):
                self.register(obj)

    def register(self, fn: Any, *, name: str | None = None) -> RewardFunction:
        """Register a RewardFunction or a plain function under ``name`` (default: its own name)."""
        wrapped = as_reward_function(fn, name=name)
        self._functions[name or wrapped.name] = wrapped
        return wrapped

    def names(self) -> list[str]:
        return sorted(self._functions)

    def resolve(self, ref: str) -> RewardFunction:
        """A registered name (or alias), else ``module:attribute``; :class:`RewardConfigError` if neither."""
        key = ALIASES.get(ref, ref)
        if key in self._functions:
            return self._functions[key]
        if ":" not in ref:
            known = ", ".join(self.names())
            raise RewardConfigError(
                f"unknown reward function {ref!r}: use a built-in ({known}) or a 'module:function' path"
            )
        fn = as_reward_function(import_object(ref), name=None)
        self._functions[ref] = fn
        return fn

    def check(self, ref: str, params: Mapping[str, Any]) -> RewardFunction:
        """Resolve ``ref`` and let it reject bad parameters early (if it has ``check_params``)."""
        fn = self.resolve(ref)
        checker = getattr(fn, "check_params", None)
        if callable(checker):
            checker(params)
        return fn


def import_object(ref: str) -> Any:
    """Import ``package.module:attr.sub``; :class:`RewardConfigError` with the reason on failure."""
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise RewardConfigError(f"bad reward import path {ref!r}: expected 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardConfigError(f"cannot import module {module_name!r} for reward {ref!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RewardConfigError(f"module {module_name!r} has no attribute {attr_path!r}") from exc
    return obj


def as_reward_function(obj: Any, *, name: str | None) -> RewardFunction:
    """Accept a RewardFunction, a class of one, or a plain callable."""
    if inspect.isclass(obj):
        try:
            obj = obj()
        except TypeError as exc:
            raise RewardConfigError(f"cannot instantiate reward class {obj.__name__}: {exc}") from exc
    has_score = callable(getattr(obj, "score", None))
    if has_score and isinstance(getattr(obj, "name", None), str) and hasattr(obj, "version"):
        return obj  # type: ignore[no-any-return]
    if callable(obj):
        return FunctionReward(obj, name=name)
    raise RewardConfigError(f"{obj!r} is neither a reward function nor callable")


_DEFAULT: RewardRegistry | None = None


def default_registry() -> RewardRegistry:
    """A process-wide registry with the built-ins (created on first use, not at import)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = RewardRegistry()
    return _DEFAULT


def resolve_reward(ref: str) -> RewardFunction:
    """Shortcut for ``default_registry().resolve(ref)``."""
    return default_registry().resolve(ref)
