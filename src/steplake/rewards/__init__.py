"""Reward functions: protocol, registry, built-ins, HTTP reward model, LLM judges, configuration."""

from steplake.rewards.base import (
    FunctionReward,
    GroupRewardFunction,
    RewardConfigError,
    RewardContext,
    RewardEnv,
    RewardFunction,
    RewardResult,
    Rollout,
    reward_function,
)
from steplake.rewards.config import (
    ChannelRewards,
    ComponentResult,
    FunctionSpec,
    RewardSpec,
    combine_results,
    load_reward_spec,
    needs_group,
    score_group,
    score_trajectory,
)
from steplake.rewards.registry import RewardRegistry, default_registry, resolve_reward
from steplake.rules.rewards import combine

__all__ = [
    "ChannelRewards",
    "ComponentResult",
    "FunctionReward",
    "FunctionSpec",
    "GroupRewardFunction",
    "RewardConfigError",
    "RewardContext",
    "RewardEnv",
    "RewardFunction",
    "RewardRegistry",
    "RewardResult",
    "RewardSpec",
    "Rollout",
    "combine",
    "combine_results",
    "default_registry",
    "load_reward_spec",
    "needs_group",
    "resolve_reward",
    "reward_function",
    "score_group",
    "score_trajectory",
]
