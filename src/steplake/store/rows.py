"""Rows → records, shared by both stores: the column lists every read selects and the functions that turn
those rows into the dicts the API answers, so SQLite and PostgreSQL answer identically (their tables have
the same columns, store/schema.py and store/postgres_schema.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..types import Json
from .codec import bytes_to_floats, bytes_to_ids, loads

STEP_META_COLS = ("seq, step_id, trajectory_id, group_id, step_index, channel, policy_version, continuity,"
                  " parent_step_id, shared_prefix_len, prompt_len, response_len, token_source, finish_reason, model,"
                  " reward, latency_ms, created_at, quality, trainable, tags, note, reviewer, curated_at, doc")
STEP_COLS = STEP_META_COLS + ", prompt_tail, response_ids, response_logprobs"
TRAJ_COLS = ("seq, trajectory_id, group_id, channel, status, reward, reward_components, n_steps, metadata, created_at,"
             " updated_at, completed_at, quality, trainable, tags, note, reviewer, curated_at, n_tokens, n_realigned,"
             " n_fork, min_policy, max_policy, last_finish_reason")
GROUP_COLS = ("group_id, channel, size, n_trajectories, n_complete, n_abandoned, status, metadata, created_at,"
              " updated_at, ready_at, lease_batch_id, lease_expires_at, consumed_at")
# a trajectory's step chain, in step_index order: enough to rebuild every step's full prompt (see rebuild)
CHAIN_COLS = "step_id, step_index, parent_step_id, shared_prefix_len, prompt_tail, response_ids"
REWARD_COLS = "id, trajectory_id, step_id, name, value, version, details, created_at"
HISTORY_COLS = "id, target_kind, target_id, change, before, reviewer, at"
FEEDBACK_COLS = "id, trajectory_id, step_id, kind, value, comment, author, created_at"
BATCH_COLS = ("batch_id, channel, recipe, layout, request, group_ids, trajectory_ids, details, policy_version,"
              " created_at, lease_expires_at, acked_at")
POLICY_COLS = "version, weights_path, note, created_at"
EVENT_COLS = "id, kind, data, at"


def _curation(row: Sequence[Any], at: int) -> Json:
    return {"quality": row[at], "trainable": bool(row[at + 1]), "tags": loads(row[at + 2]) or [],
            "note": row[at + 3], "reviewer": row[at + 4], "updated_at": row[at + 5]}


def step_meta(row: Sequence[Any]) -> Json:
    """A step without its token ids, from a row of ``STEP_META_COLS`` (or ``STEP_COLS``)."""
    doc: Json = loads(row[24])  # type: ignore[assignment]
    out: Json = {
        "step_id": row[1], "trajectory_id": row[2], "group_id": row[3], "step_index": row[4], "channel": row[5],
        "policy_version": row[6], "continuity": row[7], "parent_step_id": row[8], "shared_prefix_len": row[9],
        "prompt_len": row[10], "response_len": row[11], "token_source": row[12], "finish_reason": row[13],
        "model": row[14], "reward": row[15], "latency_ms": row[16], "created_at": row[17],
    }
    out.update(doc)
    out["curation"] = _curation(row, 18)
    return out


def chain_of(row: Sequence[Any]) -> tuple[Any, ...]:
    """The ``CHAIN_COLS`` part of a ``STEP_COLS`` row."""
    return row[1], row[4], row[8], row[9], row[25], row[26]


def rebuild(chain: Sequence[Sequence[Any]]) -> dict[str, tuple[bytes, bytes]]:
    """step_id → (full prompt bytes, response bytes) for rows of ``CHAIN_COLS`` in step order, resolving
    prefix sharing along parents."""
    out: dict[str, tuple[bytes, bytes]] = {}
    for step_id, _, parent, shared, tail, resp in chain:
        prefix = b""
        if shared and parent is not None:
            pp, pr = out[parent]
            prefix = (pp + pr)[: shared * 4]
        out[step_id] = (prefix + bytes(tail), bytes(resp))
    return out


def step_with_ids(row: Sequence[Any], full: dict[str, tuple[bytes, bytes]]) -> Json:
    """A whole step from a ``STEP_COLS`` row and its rebuilt ids (``rebuild``)."""
    d = step_meta(row)
    p, resp = full[row[1]]
    d["prompt_ids"] = bytes_to_ids(p)
    d["response_ids"] = bytes_to_ids(resp)
    d["response_logprobs"] = bytes_to_floats(row[27])
    return d


def traj_dict(row: Sequence[Any]) -> Json:
    return {
        "trajectory_id": row[1], "group_id": row[2], "channel": row[3], "status": row[4], "reward": row[5],
        "reward_components": loads(row[6]) or {}, "n_steps": row[7], "metadata": loads(row[8]) or {},
        "created_at": row[9], "updated_at": row[10], "completed_at": row[11], "curation": _curation(row, 12),
        "n_tokens": row[18], "n_realigned": row[19], "n_fork": row[20],
        "policy_versions": [row[21], row[22]] if row[21] is not None else [], "last_finish_reason": row[23],
    }


def group_dict(row: Sequence[Any]) -> Json:
    return {"group_id": row[0], "channel": row[1], "size": row[2], "n_trajectories": row[3], "n_complete": row[4],
            "n_abandoned": row[5], "status": row[6], "metadata": loads(row[7]) or {}, "created_at": row[8],
            "updated_at": row[9], "ready_at": row[10], "lease_batch_id": row[11], "lease_expires_at": row[12],
            "consumed_at": row[13]}


def reward_dict(r: Sequence[Any]) -> Json:
    return {"id": r[0], "trajectory_id": r[1], "step_id": r[2], "name": r[3], "value": r[4], "version": r[5],
            "details": loads(r[6]), "created_at": r[7]}


def history_dict(r: Sequence[Any]) -> Json:
    return {"id": r[0], "target_kind": r[1], "target_id": r[2], "change": loads(r[3]), "before": loads(r[4]),
            "reviewer": r[5], "at": r[6]}


def feedback_dict(r: Sequence[Any]) -> Json:
    return {"id": r[0], "trajectory_id": r[1], "step_id": r[2], "kind": r[3], "value": loads(r[4]),
            "comment": r[5], "author": r[6], "created_at": r[7]}


def batch_dict(r: Sequence[Any], now: float) -> Json:
    return {"batch_id": r[0], "channel": r[1], "recipe": r[2], "layout": r[3], "request": loads(r[4]),
            "group_ids": loads(r[5]), "trajectory_ids": loads(r[6]), "details": loads(r[7]),
            "policy_version": r[8], "created_at": r[9], "lease_expires_at": r[10], "acked_at": r[11],
            "status": "consumed" if r[11] else ("leased" if r[10] > now else "expired")}


def policy_dict(r: Sequence[Any] | None) -> Json:
    if r is None:
        return {"version": 0, "weights_path": None, "note": None, "created_at": None}
    return {"version": r[0], "weights_path": r[1], "note": r[2], "created_at": r[3]}


def event_dict(r: Sequence[Any]) -> Json:
    return {"id": r[0], "kind": r[1], "data": loads(r[2]), "at": r[3]}


__all__ = ["STEP_META_COLS", "STEP_COLS", "TRAJ_COLS", "GROUP_COLS", "CHAIN_COLS", "REWARD_COLS", "HISTORY_COLS",
           "FEEDBACK_COLS", "BATCH_COLS", "POLICY_COLS", "EVENT_COLS", "step_meta", "chain_of", "rebuild",
           "step_with_ids", "traj_dict", "group_dict", "reward_dict", "history_dict", "feedback_dict", "batch_dict",
           "policy_dict", "event_dict"]
