"""Batch recipes: advantages, pairs and selections for downstream RL algorithms (CONTRACT §4).

Everything here works on plain JSON-like dicts (the ``groups`` of a batch answer) and never mutates
its input: group, trajectory and step dicts are shallow-copied, token-id lists are shared.

The outcome reward ``r`` of a trajectory is ``trajectory["reward"]``. Formulas (float64):

- ``grpo``: ``A_i = (r_i - mean(r)) / (std(r, ddof=1) + 1e-6)``; a group of one gets 0.
- ``rloo``: ``A_i = r_i - mean(r_j, j != i)``; a group of one gets 0.
- ``reinforce_pp``: ``a_i = r_i - mean(r)`` within the group (a group of one gets 0), then whitened over
  every trajectory of the batch: ``A_i = (a_i - mean(a)) / (std(a, ddof=1) + whiten_eps)`` with
  ``whiten_eps = 1e-6``; a batch of one trajectory has std 0 (so ``A = 0``). Each trajectory counts once
  (not weighted by its token count).
- ``ppo``: ``advantage = None``; the trainer runs GAE on token-level rewards, which the layouts build
  (``r`` on the last response token of the last step, each step reward on its own step's last token).
- ``dpo``: per group, chosen = highest ``r``, rejected = lowest, only when they differ. Ties are broken
  by the smallest ``trajectory_id`` (string order), so the result does not depend on input order.
  Preference feedback adds pairs (see :func:`preference_pairs`). ``advantage = None``.
- ``sft``: trajectories with ``r >= min_reward`` (default: ``r`` equal to the group's best, and the best
  ``> 0``) whose curation quality is not ``"bad"``. ``advantage = None``.

Every trajectory gets ``advantage`` and every one of its steps carries the same value.

``excluded`` counts, by reason:

- ``reward_missing``: trajectories dropped because ``reward`` is null (``ppo``: no trajectory reward and
  no step reward either). ``dpo`` keeps them (they can still appear in preference pairs).
- ``zero_variance``: trajectories dropped with their group when ``drop_zero_variance=True``.
- ``no_pair`` (dpo): groups that yield no reward-based pair.
- ``preference_unresolved`` (dpo): preference feedback records that are malformed or name ids absent
  from the batch.
- ``sft_quality_bad``, ``sft_below_min_reward`` (sft): trajectories left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steplake.batches.errors import UnknownRecipeError
from steplake.batches.pairs import preference_pairs, reward_pairs
from steplake.types import Json

__all__ = [
    "GRPO_EPS",
    "RECIPES",
    "WHITEN_EPS",
    "RecipeResult",
    "apply_recipe",
    "drop_zero_variance",
    "grpo_advantages",
    "preference_pairs",
    "reinforce_pp_advantages",
    "reward_pairs",
    "rloo_advantages",
    "select_sft",
    "whiten",
]

RECIPES: tuple[str, ...] = ("grpo", "rloo", "reinforce_pp", "ppo", "dpo", "sft")
GRPO_EPS = 1e-6
WHITEN_EPS = 1e-6


@dataclass
class RecipeResult:
    """What a recipe produced: the batch answer's ``groups``, ``pairs``, ``excluded`` and ``summary``."""

    recipe: str
    groups: list[Json]
    pairs: list[Json] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Json:
        """The JSON fields to merge into a batch answer."""
        return {
            "groups": self.groups,
            "pairs": self.pairs,
            "excluded": self.excluded,
            "summary": self.summary,
        }


# ---------------------------------------------------------------------------------------------- numbers


def grpo_advantages(rewards: Sequence[float], eps: float = GRPO_EPS) -> list[float]:
    """``(r_i - mean) / (std_ddof1 + eps)``; a group of one gets ``[0.0]``."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size < 2:
        return [0.0] * int(r.size)
    out: list[float] = ((r - r.mean()) / (r.std(ddof=1) + eps)).tolist()
    return out


def rloo_advantages(rewards: Sequence[float]) -> list[float]:
    """Leave-one-out baseline ``r_i - mean(r_j, j != i)``; a group of one gets ``[0.0]``."""
    r = np.asarray(rewards, dtype=np.float64)
    n = r.size
    if n < 2:
        return [0.0] * int(n)
    out: list[float] = (r - (r.sum() - r) / (n - 1)).tolist()
    return out


def whiten(values: Sequence[float], eps: float = WHITEN_EPS) -> list[float]:
    """``(x - mean) / (std_ddof1 + eps)`` over all values; fewer than two values have std 0."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return []
    std = x.std(ddof=1) if x.size > 1 else 0.0
    out: list[float] = ((x - x.mean()) / (std + eps)).tolist()
    return out


def reinforce_pp_advantages(
    group_rewards: Sequence[Sequence[float]], eps: float = WHITEN_EPS
) -> list[list[float]]:
    """Group-mean baseline per group, then whitening over every trajectory of the batch."""
    centered: list[float] = []
    sizes: list[int] = []
    for rewards in group_rewards:
        r = np.asarray(rewards, dtype=np.float64)
        centered.extend((r - r.mean()).tolist() if r.size > 1 else [0.0] * int(r.size))
        sizes.append(int(r.size))
    flat = whiten(centered, eps)
    out: list[list[float]] = []
    start = 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out


# ---------------------------------------------------------------------------------------------- helpers


def _copy_groups(groups: Iterable[Mapping[str, Any]]) -> list[Json]:
    out = []
    for g in groups:
        trajs = []
        for t in g.get("trajectories") or []:
            tc = dict(t)
            tc["steps"] = [dict(s) for s in t.get("steps") or []]
            trajs.append(tc)
        gc = dict(g)
        gc["trajectories"] = trajs
        out.append(gc)
    return out


def _reward(traj: Mapping[str, Any]) -> float | None:
    r = traj.get("reward")
    return None if r is None else float(r)


def _has_any_reward(traj: Mapping[str, Any]) -> bool:
    return traj.get("reward") is not None or any(s.get("reward") is not None for s in traj["steps"])


def _keep_trajectories(groups: list[Json], keep: Any, reason: str, excluded: Counter[str]) -> list[Json]:
    """Keep trajectories for which ``keep(traj)`` is true; count the others; drop emptied groups."""
    out = []
    for g in groups:
        kept = [t for t in g["trajectories"] if keep(t)]
        excluded[reason] += len(g["trajectories"]) - len(kept)
        if kept:
            out.append({**g, "trajectories": kept})
    return out


def _set_advantages(traj: Json, advantage: float | None) -> None:
    traj["advantage"] = advantage
    for s in traj["steps"]:
        s["advantage"] = advantage


def _quality(traj: Mapping[str, Any]) -> str | None:
    curation = traj.get("curation") or {}
    return curation.get("quality") if isinstance(curation, Mapping) else None


def drop_zero_variance(groups: Sequence[Mapping[str, Any]]) -> tuple[list[Json], int]:
    """Drop groups whose trajectory rewards are all equal (no learning signal).

    A group with fewer than two non-null rewards counts as zero variance. Returns ``(kept groups,
    number of trajectories dropped)``; the number of dropped groups is ``len(groups) - len(kept)``.
    The kept groups are the input objects themselves (not copies).
    """
    kept: list[Json] = []
    dropped = 0
    for g in groups:
        trajs = g.get("trajectories") or []
        rewards = [float(t["reward"]) for t in trajs if t.get("reward") is not None]
        if len(rewards) >= 2 and max(rewards) != min(rewards):
            kept.append(g)  # type: ignore[arg-type]
        else:
            dropped += len(trajs)
    return kept, dropped


# ---------------------------------------------------------------------------------------------- sft


def select_sft(
    groups: Sequence[Mapping[str, Any]], min_reward: float | None = None
) -> tuple[list[Json], dict[str, int]]:
    """Keep trajectories worth imitating (see the module docstring); returns ``(groups, excluded)``."""
    excluded: Counter[str] = Counter()
    out: list[Json] = []
    for g in groups:
        trajs = list(g.get("trajectories") or [])
        rewards = [float(t["reward"]) for t in trajs if t.get("reward") is not None]
        if min_reward is not None:
            threshold: float | None = float(min_reward)
        else:
            threshold = max(rewards) if rewards and max(rewards) > 0 else None
        kept = []
        for t in trajs:
            r = _reward(t)
            if r is None:
                excluded["reward_missing"] += 1
            elif _quality(t) == "bad":
                excluded["sft_quality_bad"] += 1
            elif threshold is None or r < threshold:
                excluded["sft_below_min_reward"] += 1
            else:
                kept.append(t)
        if kept:
            out.append({**g, "trajectories": kept})
    return out, dict(excluded)


# ---------------------------------------------------------------------------------------------- apply


def _summary(recipe: str, groups: list[Json], pairs: list[Json]) -> dict[str, Any]:
    trajs = [t for g in groups for t in g["trajectories"]]
    rewards = [float(t["reward"]) for t in trajs if t.get("reward") is not None]
    return {
        "recipe": recipe,
        "n_groups": len(groups),
        "n_trajectories": len(trajs),
        "n_steps": sum(len(t["steps"]) for t in trajs),
        "n_response_tokens": sum(len(s.get("response_ids") or []) for t in trajs for s in t["steps"]),
        "n_pairs": len(pairs),
        "reward_mean": float(np.mean(rewards)) if rewards else None,
        "reward_min": min(rewards) if rewards else None,
        "reward_max": max(rewards) if rewards else None,
    }


def _advantages(recipe: str, groups: list[Json], grpo_eps: float, whiten_eps: float) -> None:
    """Set every trajectory's (and step's) advantage; ``None`` for ppo, dpo and sft."""
    if recipe not in ("grpo", "rloo", "reinforce_pp"):
        for g in groups:
            for t in g["trajectories"]:
                _set_advantages(t, None)
        return
    rewards = [[float(t["reward"]) for t in g["trajectories"]] for g in groups]
    if recipe == "grpo":
        advs = [grpo_advantages(r, grpo_eps) for r in rewards]
    elif recipe == "rloo":
        advs = [rloo_advantages(r) for r in rewards]
    else:
        advs = reinforce_pp_advantages(rewards, whiten_eps)
    for g, group_advs in zip(groups, advs, strict=True):
        for t, a in zip(g["trajectories"], group_advs, strict=True):
            _set_advantages(t, a)


def apply_recipe(
    recipe: str,
    groups: Sequence[Mapping[str, Any]],
    *,
    min_reward: float | None = None,
    whiten_eps: float = WHITEN_EPS,
    grpo_eps: float = GRPO_EPS,
    drop_zero_variance_groups: bool = False,
    feedback: Iterable[Mapping[str, Any]] = (),
) -> RecipeResult:
    """Run ``recipe`` on a batch's groups (see the module docstring for the exact rules).

    ``groups`` is ``[{group_id, trajectories: [{trajectory_id, reward, steps: [Step], ...}]}]``; the
    input is not modified. ``feedback`` (dpo only) holds feedback records; preference ones add pairs.
    """
    if recipe not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    work = _copy_groups(groups)
    excluded: Counter[str] = Counter()
    if recipe == "ppo":
        work = _keep_trajectories(work, _has_any_reward, "reward_missing", excluded)
    elif recipe not in ("dpo", "sft"):
        work = _keep_trajectories(work, lambda t: t.get("reward") is not None, "reward_missing", excluded)
    if drop_zero_variance_groups:
        work, n = drop_zero_variance(work)
        excluded["zero_variance"] += n
    pairs: list[Json] = []
    if recipe == "dpo":
        pairs, excluded["no_pair"] = reward_pairs(work)
        prefs, excluded["preference_unresolved"] = preference_pairs(work, feedback)
        pairs.extend(prefs)
    elif recipe == "sft":
        work, sft_excluded = select_sft(work, min_reward)
        excluded.update(sft_excluded)
    _advantages(recipe, work, grpo_eps, whiten_eps)
    counts = {k: v for k, v in excluded.items() if v}
    return RecipeResult(recipe, work, pairs, counts, _summary(recipe, work, pairs))
