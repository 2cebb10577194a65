"""Turn a BatchSelection into the answer of ``POST /api/v1/batches`` (CONTRACT §4): full steps, the recipe's
advantages, pairs and exclusions, a summary, and the batch's provenance recorded for reproduction."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..records import BatchIn
from ..store.base import BatchSelection, Json, Store


def _attach_steps(store: Store, request: BatchIn, sel: BatchSelection, excluded: dict[str, int]) -> list[Json]:
    tids = [t["trajectory_id"] for g in sel.groups for t in g["trajectories"]]
    steps = store.steps_of(tids)
    groups = []
    for g in sel.groups:
        trajs = []
        for t in g["trajectories"]:
            ss = steps.get(t["trajectory_id"], [])
            if request.filters.trainable_only:
                kept = [s for s in ss if s["curation"]["trainable"]]
                if len(kept) != len(ss):
                    excluded["untrainable_steps"] = excluded.get("untrainable_steps", 0) + len(ss) - len(kept)
                ss = kept
            if not ss:
                excluded["no_steps"] = excluded.get("no_steps", 0) + 1
                continue
            trajs.append({**t, "advantage": None, "steps": ss})
        groups.append({"group_id": g["group_id"], "trajectories": trajs})
    return groups


def _summary(groups: list[Json], sel: BatchSelection) -> Json:
    n_steps = n_tok = n_resp = 0
    versions: set[int] = set()
    reward_versions: dict[str, set[str]] = {}
    rewards: list[float] = []
    for g in groups:
        for t in g["trajectories"]:
            if t["reward"] is not None:
                rewards.append(t["reward"])
            for name, c in (t.get("reward_components") or {}).items():
                reward_versions.setdefault(name, set()).add(str(c.get("version")))
            for s in t["steps"]:
                n_steps += 1
                n_tok += len(s["prompt_ids"]) + len(s["response_ids"])
                n_resp += len(s["response_ids"])
                versions.add(s["policy_version"])
    return {
        "n_groups": len(groups), "n_trajectories": sum(len(g["trajectories"]) for g in groups),
        "n_steps": n_steps, "n_tokens": n_tok, "n_response_tokens": n_resp,
        "policy_versions": sorted(versions), "current_policy_version": sel.policy_version,
        "reward_versions": {k: sorted(v) for k, v in reward_versions.items()},
        "reward_mean": sum(rewards) / len(rewards) if rewards else None,
    }


_HASHED = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY  # the bytes the store's codec writes


def content_hash(groups: list[Json]) -> str:
    h = hashlib.sha256()
    for g in groups:
        for t in g["trajectories"]:
            for s in t["steps"]:
                h.update(orjson.dumps([s["step_id"], s["prompt_ids"], s["response_ids"], s["response_logprobs"],
                                       t["reward"], t.get("advantage")], option=_HASHED))
    return h.hexdigest()


def apply_recipe_to(request: BatchIn, groups: list[Json], answer: Json, feedback: list[Json]) -> None:
    if request.recipe is None:
        return
    from ..batches.recipes import apply_recipe

    res: Any = apply_recipe(request.recipe, groups, min_reward=request.filters.min_reward, feedback=feedback)
    data = res if isinstance(res, dict) else res.__dict__
    answer["groups"] = data.get("groups", groups)
    if "pairs" in data:
        answer["pairs"] = data["pairs"]
    for k, v in (data.get("excluded") or {}).items():
        answer["excluded"][k] = answer["excluded"].get(k, 0) + v
    answer["summary"].update(data.get("summary") or {})


def build_batch_answer(store: Store, request: BatchIn, sel: BatchSelection) -> Json:
    excluded = dict(sel.excluded)
    groups = _attach_steps(store, request, sel, excluded)
    answer: Json = {"batch_id": sel.batch_id, "lease_expires_at": sel.lease_expires_at, "recipe": request.recipe,
                    "layout": request.layout, "channel": request.channel, "groups": groups, "pairs": [],
                    "excluded": excluded, "summary": _summary(groups, sel)}
    feedback: list[Json] = []
    if request.recipe == "dpo":
        tids = [t["trajectory_id"] for g in groups for t in g["trajectories"]]
        feedback = [f for tid in tids for f in store.list_feedback({"trajectory_id": tid, "kind": "preference"})]
    apply_recipe_to(request, groups, answer, feedback)
    if request.layout == "trajectory":
        from ..batches.layout import layout_summary

        answer["summary"].update(layout_summary(answer["groups"]))
    answer["summary"]["content_hash"] = content_hash(answer["groups"])
    if sel.batch_id:
        step_ids = [s["step_id"] for g in answer["groups"] for t in g["trajectories"] for s in t["steps"]]
        store.record_batch_details(sel.batch_id, {"step_ids": step_ids, "summary": answer["summary"],
                                                  "excluded": answer["excluded"]})
    return answer


__all__ = ["build_batch_answer", "content_hash"]
