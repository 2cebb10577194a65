"""Adapters from a batch answer to trainer-side containers: verl, Hugging Face ``datasets``, TRL DPO.

Optional packages (torch, tensordict, verl, datasets) are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steplake.batches.layout import row_meta, to_rows
from steplake.batches.tensorize import tensorize_rows
from steplake.types import Json

__all__ = ["VerlBatch", "to_hf_dataset", "to_trl_dpo_rows", "to_verl"]


@dataclass
class VerlBatch:
    """Stand-in for ``verl.DataProto`` when verl is not installed; same attribute names.

    ``batch`` is a ``tensordict.TensorDict`` when tensordict is installed, else a dict of torch tensors.
    """

    batch: Any
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.meta_info.get("batch_size", 0))


def _batch_layout(batch: Mapping[str, Any], layout: str | None) -> str:
    if layout is not None:
        return layout
    summary = batch.get("summary") or {}
    return str(batch.get("layout") or summary.get("layout") or "step")


def _verl_tensors(rows: Sequence[Mapping[str, Any]], **tensorize_kwargs: Any) -> dict[str, Any]:
    tensors = tensorize_rows(rows, mode="padded", backend="torch", **tensorize_kwargs)
    tensors["token_level_scores"] = tensors["token_level_rewards"].clone()
    if rows and not bool(tensors["has_log_probs"].all()):
        del tensors["old_log_probs"]  # verl recomputes them; zeros would be wrong
    if all(r.get("advantage") is None for r in rows):
        del tensors["advantages"]  # ppo: the trainer computes them (GAE)
    return tensors


def to_verl(batch: Mapping[str, Any], *, layout: str | None = None, **tensorize_kwargs: Any) -> Any:
    """A verl-shaped batch: ``verl.DataProto`` when verl is importable, else a :class:`VerlBatch`.

    ``batch.batch`` holds padded torch tensors (``prompts``, ``responses``, ``input_ids``,
    ``attention_mask``, ``position_ids``, ``response_mask``, ``old_log_probs`` (only when every row has
    sampling logprobs), ``advantages`` (only when the recipe set them), ``token_level_rewards``,
    ``token_level_scores``, ``rewards``, ``has_log_probs``, ``prompt_lens``, ``response_lens``);
    ``non_tensor_batch`` numpy object arrays (``uid`` = group id, ``group_id``, ``trajectory_id``,
    ``step_id``, ``step_ids``, ``step_index``, ``layout``, ``policy_version``, ``continuity``);
    ``meta_info`` ``batch_id``, ``lease_expires_at``, ``layout``, ``recipe``, ``batch_size``, ``summary``,
    ``excluded``. ``layout`` defaults to the batch's own (else ``"step"``); other keyword arguments go
    to :func:`~steplake.batches.tensorize.tensorize_rows` (``pad_token_id``, ``max_length``,
    ``truncation``). Requires torch.
    """
    layout = _batch_layout(batch, layout)
    rows, layout_summary = to_rows(batch, layout)
    tensors = _verl_tensors(rows, **tensorize_kwargs)
    summary = dict(batch.get("summary") or {})
    meta = {
        "batch_id": batch.get("batch_id"),
        "lease_expires_at": batch.get("lease_expires_at"),
        "layout": layout,
        "recipe": batch.get("recipe", summary.get("recipe")),
        "batch_size": len(rows),
        "summary": {**summary, **layout_summary},
        "excluded": dict(batch.get("excluded") or {}),
    }
    try:
        from tensordict import TensorDict
    except ImportError:
        td: Any = tensors
    else:
        td = TensorDict(tensors, batch_size=[len(rows)])
    non_tensor = row_meta(rows)
    try:
        from verl import DataProto
    except ImportError:
        return VerlBatch(batch=td, non_tensor_batch=non_tensor, meta_info=meta)
    return DataProto(batch=td, non_tensor_batch=non_tensor, meta_info=meta)


def to_hf_dataset(batch: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, layout: str = "step") -> Any:
    """A ``datasets.Dataset`` with one row per layout row (columns as in :mod:`steplake.batches.layout`).

    Requires the ``datasets`` package.
    """
    import datasets

    rows, _ = to_rows(batch, layout)
    return datasets.Dataset.from_list([dict(r) for r in rows])


# ---------------------------------------------------------------------------------------------- TRL DPO


def _assistant_message(step: Mapping[str, Any]) -> Json:
    response = step.get("response") or {}
    msg: Json = {"role": "assistant", "content": response.get("content") or ""}
    if response.get("tool_calls"):
        msg["tool_calls"] = response["tool_calls"]
    return msg


def _completion_ids(steps: Sequence[Mapping[str, Any]], prompt_ids: Sequence[int]) -> list[int]:
    """Tokens after ``prompt_ids`` up to the end of the last step (every response if it does not extend)."""
    last = steps[-1]
    seq = list(last.get("prompt_ids") or []) + list(last.get("response_ids") or [])
    n = len(prompt_ids)
    if seq[:n] == list(prompt_ids):
        return seq[n:]
    return [t for s in steps for t in s.get("response_ids") or []]


def _completion_messages(steps: Sequence[Mapping[str, Any]], n_prompt: int) -> list[Json]:
    last = steps[-1]
    history = list(last.get("messages") or [])[n_prompt:]
    return history + [_assistant_message(last)]


def to_trl_dpo_rows(pairs_or_batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Json]:
    """Rows for TRL's ``DPOTrainer`` from DPO pairs (or a batch answer holding ``pairs``).

    Each row: ``prompt`` (the chosen side's first request ``messages``, conversational format, or
    ``None``), ``chosen`` / ``rejected`` (the messages after the prompt, ending with the assistant
    answer), ``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids`` (the pair's shared
    ``prompt_ids`` and each side's tokens after it), ``chosen_reward``, ``rejected_reward``,
    ``group_id``, ``source``.
    """
    pairs = pairs_or_batch.get("pairs") or [] if isinstance(pairs_or_batch, Mapping) else pairs_or_batch
    rows: list[Json] = []
    for pair in pairs:
        chosen, rejected = pair["chosen"]["steps"], pair["rejected"]["steps"]
        prompt_msgs = chosen[0].get("messages") if chosen else None
        n_prompt = len(prompt_msgs or [])
        rows.append(
            {
                "prompt": list(prompt_msgs) if prompt_msgs is not None else None,
                "chosen": _completion_messages(chosen, n_prompt),
                "rejected": _completion_messages(rejected, n_prompt),
                "prompt_input_ids": list(pair.get("prompt_ids") or []),
                "chosen_input_ids": _completion_ids(chosen, pair.get("prompt_ids") or []),
                "rejected_input_ids": _completion_ids(rejected, pair.get("prompt_ids") or []),
                "chosen_reward": pair.get("chosen_reward"),
                "rejected_reward": pair.get("rejected_reward"),
                "group_id": pair.get("group_id"),
                "source": pair.get("source"),
            }
        )
    return rows
