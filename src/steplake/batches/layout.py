"""Row layouts for a batch: one row per step, or one row per trajectory (CONTRACT §4).

A row is a plain dict with the same keys in both layouts (so mixed rows fit one table):

==================== =====================================================================================
``layout``           ``"step"`` or ``"trajectory"``
``group_id``         the group (verl's ``uid``)
``trajectory_id``    the trajectory
``step_id``          the step (``None`` on trajectory rows)
``step_ids``         the steps the row covers, in ``step_index`` order
``step_index``       the step's index (``None`` on trajectory rows)
``prompt_ids``       step rows: the step's prompt; trajectory rows: the first step's prompt
``response_ids``     step rows: the sampled ids; trajectory rows: everything after the first prompt
                     (model turns, tool results, user turns ...), i.e. the last step's
                     ``prompt_ids + response_ids`` minus the first prompt
``response_mask``    1 on model-sampled tokens, 0 elsewhere (all 1 on step rows), len = response
``response_logprobs`` aligned with ``response_ids`` (0.0 on non-sampled tokens), or ``None`` when any
                     covered step has no logprobs
``token_level_rewards`` aligned with ``response_ids``: each step reward on its step's last response token,
                     plus the trajectory reward on the last response token of the trajectory's last step
``advantage``        the trajectory's advantage (``None`` when the recipe sets none)
``reward``           the trajectory's reward
``policy_version``   the step's policy version (trajectory rows: the oldest of its steps)
``continuity``       the step's continuity (trajectory rows: ``"clean"``)
==================== =====================================================================================

Rows share id and logprob lists with the input steps (no copies): treat them as read-only.

A step with an empty ``response_ids`` has nowhere to hold a reward on a step row; on a trajectory row its
reward goes to the last sampled token before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from steplake.batches.errors import BatchError, ContinuityMismatchError
from steplake.types import Json

__all__ = [
    "LAYOUTS",
    "batch_groups",
    "layout_summary",
    "row_meta",
    "to_rows",
    "to_step_rows",
    "to_trajectory_rows",
]

LAYOUTS: tuple[str, ...] = ("step", "trajectory")
_CHAINABLE = frozenset({"first", "clean", None})


def batch_groups(batch_or_groups: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The groups of a batch answer (``{"groups": [...]}``) or a list of groups as is."""
    if isinstance(batch_or_groups, Mapping):
        return list(batch_or_groups.get("groups") or [])
    return list(batch_or_groups)


def _sorted_steps(traj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = list(traj.get("steps") or [])
    if all("step_index" in s for s in steps):
        steps.sort(key=lambda s: s["step_index"])
    return steps


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


def _first_float(*values: Any) -> float | None:
    """The first non-null value as a float (the step's advantage, else its trajectory's)."""
    return next((float(v) for v in values if v is not None), None)


def _logprobs(step: Mapping[str, Any]) -> list[float] | None:
    lp = step.get("response_logprobs")
    if lp is not None and len(lp) != len(step.get("response_ids") or []):
        raise BatchError(
            f"step {step.get('step_id')!r}: response_logprobs length {len(lp)} != "
            f"response_ids length {len(step.get('response_ids') or [])}"
        )
    return lp


def _step_row(group_id: Any, traj: Mapping[str, Any], step: Mapping[str, Any], is_last: bool) -> Json:
    response = step.get("response_ids") or []
    rewards = [0.0] * len(response)
    if response:
        rewards[-1] = float(step.get("reward") or 0.0) + (
            float(traj.get("reward") or 0.0) if is_last else 0.0
        )
    return {
        "layout": "step",
        "group_id": group_id,
        "trajectory_id": traj.get("trajectory_id", step.get("trajectory_id")),
        "step_id": step.get("step_id"),
        "step_ids": [step.get("step_id")],
        "step_index": step.get("step_index"),
        "prompt_ids": step.get("prompt_ids") or [],
        "response_ids": response,
        "response_mask": [1] * len(response),
        "response_logprobs": _logprobs(step),
        "token_level_rewards": rewards,
        "advantage": _first_float(step.get("advantage"), traj.get("advantage")),
        "reward": _float_or_none(traj.get("reward")),
        "policy_version": step.get("policy_version"),
        "continuity": step.get("continuity"),
    }


def _trajectory_step_rows(group_id: Any, traj: Mapping[str, Any]) -> list[Json]:
    steps = _sorted_steps(traj)
    return [_step_row(group_id, traj, s, i == len(steps) - 1) for i, s in enumerate(steps)]


def to_step_rows(batch_or_groups: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Json]:
    """One row per step, in group, trajectory and ``step_index`` order."""
    return [
        row
        for g in batch_groups(batch_or_groups)
        for t in g.get("trajectories") or []
        for row in _trajectory_step_rows(g.get("group_id"), t)
    ]


def _extends(prompt: Sequence[int], prev: Mapping[str, Any]) -> bool:
    """Whether ``prompt`` starts with ``prev.prompt_ids + prev.response_ids``."""
    pp, pr = prev.get("prompt_ids") or [], prev.get("response_ids") or []
    n, m = len(pp), len(pr)
    if len(prompt) < n + m:
        return False
    if isinstance(prompt, list) and isinstance(pp, list) and isinstance(pr, list):
        return prompt[:n] == pp and prompt[n : n + m] == pr
    return list(prompt[:n]) == list(pp) and list(prompt[n : n + m]) == list(pr)


def _is_clean_chain(steps: Sequence[Mapping[str, Any]]) -> bool:
    """True when every step extends the previous one; raises when a ``clean`` claim is false."""
    if any(s.get("continuity") not in _CHAINABLE for s in steps):
        return False
    for prev, step in zip(steps, steps[1:], strict=False):
        if not _extends(step.get("prompt_ids") or [], prev):
            if step.get("continuity") == "clean":
                raise ContinuityMismatchError(
                    f"step {step.get('step_id')!r} of trajectory {step.get('trajectory_id')!r} claims clean "
                    f"continuity but its prompt_ids do not start with step {prev.get('step_id')!r}'s "
                    "prompt_ids + response_ids"
                )
            return False
    return True


def _trajectory_row(group_id: Any, traj: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> Json:
    last = steps[-1]
    p0 = len(steps[0].get("prompt_ids") or [])
    full = list(last.get("prompt_ids") or []) + list(last.get("response_ids") or [])
    n = len(full) - p0
    mask, logprobs, rewards = [0] * n, [0.0] * n, [0.0] * n
    has_logprobs = True
    last_pos = -1
    for step in steps:
        start = len(step.get("prompt_ids") or []) - p0
        width = len(step.get("response_ids") or [])
        mask[start : start + width] = [1] * width
        lp = _logprobs(step)
        if lp is None:
            has_logprobs = False
        else:
            logprobs[start : start + width] = lp
        last_pos = start + width - 1 if width else last_pos
        if step.get("reward") is not None and last_pos >= 0:
            rewards[last_pos] += float(step["reward"])
    if traj.get("reward") is not None and last_pos >= 0:
        rewards[last_pos] += float(traj["reward"])
    versions = [s["policy_version"] for s in steps if s.get("policy_version") is not None]
    return {
        "layout": "trajectory",
        "group_id": group_id,
        "trajectory_id": traj.get("trajectory_id"),
        "step_id": None,
        "step_ids": [s.get("step_id") for s in steps],
        "step_index": None,
        "prompt_ids": full[:p0],
        "response_ids": full[p0:],
        "response_mask": mask,
        "response_logprobs": logprobs if has_logprobs else None,
        "token_level_rewards": rewards,
        "advantage": _first_float(traj.get("advantage"), steps[0].get("advantage")),
        "reward": _float_or_none(traj.get("reward")),
        "policy_version": min(versions) if versions else None,
        "continuity": "clean",
    }


def to_trajectory_rows(
    batch_or_groups: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> tuple[list[Json], dict[str, int]]:
    """One row per trajectory whose steps form a clean chain; step rows for the others.

    A trajectory qualifies when every step's ``continuity`` is ``first``/``clean`` (or unset) and each
    step's ``prompt_ids`` starts with the previous step's ``prompt_ids + response_ids`` (checked here; a
    step claiming ``clean`` that does not raises :class:`ContinuityMismatchError`). ``realigned``/``fork``
    trajectories fall back to one row per step. Returns ``(rows, summary)`` with summary keys
    ``trajectory_rows``, ``fallback_step_rows``, ``fallback_trajectories``.
    """
    rows: list[Json] = []
    summary = {"trajectory_rows": 0, "fallback_step_rows": 0, "fallback_trajectories": 0}
    for g in batch_groups(batch_or_groups):
        for t in g.get("trajectories") or []:
            steps = _sorted_steps(t)
            if not steps:
                continue
            if _is_clean_chain(steps):
                rows.append(_trajectory_row(g.get("group_id"), t, steps))
                summary["trajectory_rows"] += 1
            else:
                fallback = _trajectory_step_rows(g.get("group_id"), t)
                rows.extend(fallback)
                summary["fallback_step_rows"] += len(fallback)
                summary["fallback_trajectories"] += 1
    return rows, summary


def layout_summary(batch_or_groups: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The summary :func:`to_trajectory_rows` would give, without building rows (for the server).

    Keys ``trajectory_rows``, ``fallback_step_rows``, ``fallback_trajectories``; never raises: a false
    ``clean`` claim counts as a fallback and under ``continuity_mismatch`` (present only when > 0).
    """
    summary = {"trajectory_rows": 0, "fallback_step_rows": 0, "fallback_trajectories": 0}
    for g in batch_groups(batch_or_groups):
        for t in g.get("trajectories") or []:
            steps = _sorted_steps(t)
            if not steps:
                continue
            try:
                clean = _is_clean_chain(steps)
            except ContinuityMismatchError:
                summary["continuity_mismatch"] = summary.get("continuity_mismatch", 0) + 1
                clean = False
            if clean:
                summary["trajectory_rows"] += 1
            else:
                summary["fallback_step_rows"] += len(steps)
                summary["fallback_trajectories"] += 1
    return summary


def to_rows(
    batch_or_groups: Mapping[str, Any] | Sequence[Mapping[str, Any]], layout: str = "step"
) -> tuple[list[Json], dict[str, int]]:
    """Rows in ``layout`` (``"step"`` or ``"trajectory"``) and a summary of how they were built."""
    if layout == "step":
        rows = to_step_rows(batch_or_groups)
        return rows, {"step_rows": len(rows)}
    if layout == "trajectory":
        return to_trajectory_rows(batch_or_groups)
    raise BatchError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def row_meta(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-row non-tensor columns as numpy object arrays (verl ``non_tensor_batch`` style).

    Keys: ``uid`` (= ``group_id``), ``group_id``, ``trajectory_id``, ``step_id``, ``step_ids``,
    ``step_index``, ``layout``, ``policy_version``, ``continuity``.
    """
    keys = (
        "group_id",
        "trajectory_id",
        "step_id",
        "step_ids",
        "step_index",
        "layout",
        "policy_version",
        "continuity",
    )
    out: dict[str, np.ndarray] = {}
    for key in keys:
        col = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            col[i] = list(r.get(key) or []) if key == "step_ids" else r.get(key)
        out[key] = col
    out["uid"] = out["group_id"].copy()
    return out
