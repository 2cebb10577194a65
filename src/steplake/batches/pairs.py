"""DPO pairs: reward-based (best against worst of a group) and from ``preference`` feedback.

Ties are broken by the smallest ``trajectory_id`` (string order), so results do not depend on input
order. A pair is ``{group_id, prompt_ids, chosen, rejected, chosen_reward, rejected_reward, source}``
where ``chosen``/``rejected`` are ``{trajectory_id, reward, steps[, step_id]}`` and ``prompt_ids`` is
the common prefix of the two sides' first ``prompt_ids`` (the group's shared prompt); ``source`` is
``"reward"`` or ``"preference"`` (then ``feedback_id`` is copied when the record has one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..types import Json

__all__ = ["preference_pairs", "reward_pairs"]


def _reward(traj: Mapping[str, Any]) -> float | None:
    r = traj.get("reward")
    return None if r is None else float(r)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _side(
    traj: Mapping[str, Any], steps: list[Json], reward: float | None, step_id: str | None = None
) -> Json:
    side: Json = {"trajectory_id": traj.get("trajectory_id"), "reward": reward, "steps": steps}
    if step_id is not None:
        side["step_id"] = step_id
    return side


def _pair(group_id: Any, chosen: Json, rejected: Json, source: str) -> Json:
    a = chosen["steps"][0].get("prompt_ids") or [] if chosen["steps"] else []
    b = rejected["steps"][0].get("prompt_ids") or [] if rejected["steps"] else []
    return {
        "group_id": group_id,
        "prompt_ids": list(a[: _common_prefix_len(a, b)]),
        "chosen": chosen,
        "rejected": rejected,
        "chosen_reward": chosen["reward"],
        "rejected_reward": rejected["reward"],
        "source": source,
    }


def reward_pairs(groups: Sequence[Mapping[str, Any]]) -> tuple[list[Json], int]:
    """One pair per group: highest reward (chosen) against lowest (rejected), only when they differ.

    Ties are broken by the smallest ``trajectory_id``. ``prompt_ids`` is the common prefix of the two
    first steps' ``prompt_ids`` (the group's shared prompt). Returns ``(pairs, groups without a pair)``.
    """
    pairs: list[Json] = []
    no_pair = 0
    for g in groups:
        scored = [
            (float(t["reward"]), str(t.get("trajectory_id")), t)
            for t in g.get("trajectories") or []
            if t.get("reward") is not None
        ]
        if len(scored) < 2:
            no_pair += 1
            continue
        best = min(scored, key=lambda x: (-x[0], x[1]))
        worst = min(scored, key=lambda x: (x[0], x[1]))
        if best[0] == worst[0]:
            no_pair += 1
            continue
        chosen = _side(best[2], list(best[2]["steps"]), best[0])
        rejected = _side(worst[2], list(worst[2]["steps"]), worst[0])
        pairs.append(_pair(g.get("group_id"), chosen, rejected, "reward"))
    return pairs, no_pair


def _index(
    groups: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, tuple[Any, Json]], dict[str, tuple[Any, Json, Json]]]:
    trajs: dict[str, tuple[Any, Json]] = {}
    steps: dict[str, tuple[Any, Json, Json]] = {}
    for g in groups:
        for t in g.get("trajectories") or []:
            trajs[str(t.get("trajectory_id"))] = (g.get("group_id"), t)
            for s in t.get("steps") or []:
                steps[str(s.get("step_id"))] = (g.get("group_id"), t, s)
    return trajs, steps


def _preference_pair(
    fb: Mapping[str, Any], trajs: Mapping[str, tuple[Any, Json]], steps: Mapping[str, tuple[Any, Json, Json]]
) -> Json | None:
    value = fb.get("value")
    if not isinstance(value, Mapping) or value.get("rejected") is None:
        return None
    anchor = fb.get("trajectory_id") or fb.get("step_id")
    chosen_id, rejected_id = str(value.get("chosen") or anchor), str(value["rejected"])
    if chosen_id == rejected_id:
        return None
    if chosen_id in trajs and rejected_id in trajs:
        (gc, tc), (_, tr) = trajs[chosen_id], trajs[rejected_id]
        pair = _pair(
            gc,
            _side(tc, list(tc["steps"]), _reward(tc)),
            _side(tr, list(tr["steps"]), _reward(tr)),
            "preference",
        )
    elif chosen_id in steps and rejected_id in steps:
        (gc, tc, sc), (_, tr, sr) = steps[chosen_id], steps[rejected_id]
        rc = None if sc.get("reward") is None else float(sc["reward"])
        rr = None if sr.get("reward") is None else float(sr["reward"])
        pair = _pair(gc, _side(tc, [sc], rc, chosen_id), _side(tr, [sr], rr, rejected_id), "preference")
    else:
        return None
    fid = fb.get("feedback_id", fb.get("id"))
    if fid is not None:
        pair["feedback_id"] = fid
    return pair


def preference_pairs(
    groups: Sequence[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]]
) -> tuple[list[Json], int]:
    """Pairs from ``preference`` feedback records.

    A record is ``{"kind": "preference", "trajectory_id" | "step_id": anchor, "value": {"chosen": id,
    "rejected": id}}``; ``chosen`` defaults to the anchor. Both ids are trajectory ids (a whole-trajectory
    pair) or both step ids (a pair of single steps; ``steps`` holds that one step and ``step_id`` is set).
    Both must be in ``groups``. Records of other kinds are ignored; duplicates (same chosen and rejected)
    are kept once. Returns ``(pairs, unresolved records)``; pairs have ``source: "preference"``.
    """
    trajs, steps = _index(groups)
    pairs: list[Json] = []
    seen: set[tuple[Any, Any, Any, Any]] = set()
    unresolved = 0
    for fb in feedback:
        if fb.get("kind") != "preference":
            continue
        pair = _preference_pair(fb, trajs, steps)
        if pair is None:
            unresolved += 1
            continue
        key = (
            pair["chosen"]["trajectory_id"],
            pair["chosen"].get("step_id"),
            pair["rejected"]["trajectory_id"],
            pair["rejected"].get("step_id"),
        )
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return pairs, unresolved
