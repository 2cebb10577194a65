"""Turn batch rows into arrays: padded (left-padded prompts, right-padded responses) or packed.

Key names follow verl's ``DataProto.batch`` conventions. ``B`` rows, ``P`` = longest prompt, ``R`` =
longest response, ``T`` = total tokens.

Padded (``mode="padded"``):

======================= ========= =========================================================================
``input_ids``           [B, P+R]  int64, ``prompts`` then ``responses``
``attention_mask``      [B, P+R]  int64, 1 on real tokens (tool results inside a trajectory row included)
``position_ids``        [B, P+R]  int64, ``clip(cumsum(attention_mask) - 1, 0)``
``prompts``             [B, P]    int64, left-padded with ``pad_token_id``
``responses``           [B, R]    int64, right-padded with ``pad_token_id``
``response_mask``       [B, R]    int64, the loss mask: 1 on model-sampled tokens only
``old_log_probs``       [B, R]    float32, sampling logprobs (0 where masked or unknown)
``advantages``          [B, R]    float32, the row's advantage on ``response_mask`` tokens (0 if none)
``token_level_rewards`` [B, R]    float32, see :mod:`steplake.batches.layout`
``rewards``             [B]       float32, trajectory reward (0 where none)
``has_log_probs``       [B]       bool, whether the row's ``old_log_probs`` are real
``prompt_lens``         [B]       int64
``response_lens``       [B]       int64
======================= ========= =========================================================================

Packed (``mode="packed"``): rows concatenated without padding, each as prompt then response.
``input_ids``, ``position_ids`` (restart at 0 per row), ``response_mask`` (0 on prompt tokens),
``old_log_probs``, ``advantages``, ``token_level_rewards`` are [T], each value aligned with the token it
describes (not shifted); ``cu_seqlens`` [B+1] int32 (flash-attention style offsets), ``seq_lens`` [B],
``prompt_lens``, ``response_lens``, ``rewards``, ``has_log_probs`` [B].

``backend="torch"`` returns the same arrays as torch tensors (``torch.from_numpy``, no copy); torch is
imported only then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from steplake.batches.errors import BatchError, SequenceTooLongError
from steplake.batches.layout import to_rows
from steplake.types import Json

__all__ = ["MODES", "BACKENDS", "as_rows", "tensorize", "tensorize_rows"]

MODES: tuple[str, ...] = ("padded", "packed")
BACKENDS: tuple[str, ...] = ("numpy", "torch")

Rows = Sequence[Mapping[str, Any]]


def as_rows(
    batch_or_rows: Mapping[str, Any] | Sequence[Mapping[str, Any]], layout: str = "step"
) -> list[Mapping[str, Any]]:
    """Rows from a batch answer (``{"groups": ...}``), a list of groups, or rows (returned as is)."""
    if isinstance(batch_or_rows, Mapping):
        return list(to_rows(batch_or_rows, layout)[0])
    items = list(batch_or_rows)
    if items and "trajectories" in items[0]:
        return list(to_rows(items, layout)[0])
    return items


def _lengths(rows: Rows, key: str) -> np.ndarray:
    return np.fromiter((len(r[key]) for r in rows), dtype=np.int64, count=len(rows))


def _flat(lists: Any, total: int, dtype: Any) -> np.ndarray:
    return np.fromiter(chain.from_iterable(lists), dtype=dtype, count=total)


def _truncate_prompts(
    rows: Rows, plen: np.ndarray, rlen: np.ndarray, max_length: int, truncation: str
) -> list[Sequence[int]]:
    """Prompt id lists, left-truncated so each row fits ``max_length`` (or an error)."""
    prompts: list[Sequence[int]] = [r["prompt_ids"] for r in rows]
    over = plen + rlen - max_length
    if not (over > 0).any():
        return prompts
    worst = int(np.argmax(over))
    if truncation != "left":
        raise SequenceTooLongError(
            f"row {worst} has {int(plen[worst] + rlen[worst])} tokens > max_length "
            f"{max_length} (pass truncation='left' to drop prompt tokens)"
        )
    if (rlen > max_length).any():
        i = int(np.argmax(rlen))
        raise SequenceTooLongError(
            f"row {i} has a response of {int(rlen[i])} tokens > max_length {max_length}"
        )
    for i in np.flatnonzero(over > 0).tolist():
        prompts[i] = list(prompts[i])[int(over[i]) :]
        plen[i] -= over[i]
    return prompts


def _flat_fields(
    rows: Rows, prompts: Sequence[Sequence[int]], plen: np.ndarray, rlen: np.ndarray
) -> dict[str, np.ndarray]:
    """Every per-token field as one flat array (prompts, then response-aligned fields)."""
    n_p, n_r = int(plen.sum()), int(rlen.sum())
    has_lp = np.fromiter((r.get("response_logprobs") is not None for r in rows), dtype=bool, count=len(rows))
    logprobs = (
        r["response_logprobs"] if ok else [0.0] * len(r["response_ids"])
        for r, ok in zip(rows, has_lp, strict=True)
    )
    adv = np.fromiter((r.get("advantage") or 0.0 for r in rows), dtype=np.float32, count=len(rows))
    if all(r.get("layout") == "step" or r.get("response_mask") is None for r in rows):
        mask = np.ones(n_r, dtype=np.int64)  # every response token was sampled
    else:
        mask = _flat((r.get("response_mask") or [1] * len(r["response_ids"]) for r in rows), n_r, np.int64)
    fmask = mask.astype(np.float32)
    token_rewards = _flat(
        (r.get("token_level_rewards") or [0.0] * len(r["response_ids"]) for r in rows), n_r, np.float32
    )
    return {
        "prompt": _flat(prompts, n_p, np.int64),
        "response": _flat((r["response_ids"] for r in rows), n_r, np.int64),
        "mask": mask,
        "logprobs": _flat(logprobs, n_r, np.float32) * fmask,
        "advantages": np.repeat(adv, rlen) * fmask,
        "token_rewards": token_rewards,
        "has_log_probs": has_lp,
        "rewards": np.fromiter((r.get("reward") or 0.0 for r in rows), dtype=np.float32, count=len(rows)),
    }


def _padded_positions(plen: np.ndarray, rlen: np.ndarray, p: int, r: int) -> np.ndarray:
    """``clip(cumsum(attention_mask) - 1, 0)`` without the cumsum: 0 on left padding, then 0, 1, ...,
    and the last position repeated over right padding."""
    last = np.maximum(plen + rlen - 1, 0)[:, None]
    pos: np.ndarray = np.minimum(np.maximum(np.arange(p + r)[None, :] - (p - plen)[:, None], 0), last)
    return pos


def _padded(f: Mapping[str, np.ndarray], plen: np.ndarray, rlen: np.ndarray, pad: int) -> Json:
    p, r = int(plen.max(initial=0)), int(rlen.max(initial=0))
    pmask = np.arange(p)[None, :] >= (p - plen)[:, None]
    rmask = np.arange(r)[None, :] < rlen[:, None]

    def scatter(mask: np.ndarray, flat: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(mask.shape, fill, dtype=dtype)
        out[mask] = flat
        return out

    prompts = scatter(pmask, f["prompt"], pad, np.int64)
    responses = scatter(rmask, f["response"], pad, np.int64)
    attention = np.concatenate([pmask, rmask], axis=1).astype(np.int64)
    return {
        "input_ids": np.concatenate([prompts, responses], axis=1),
        "attention_mask": attention,
        "position_ids": _padded_positions(plen, rlen, p, r),
        "prompts": prompts,
        "responses": responses,
        "response_mask": scatter(rmask, f["mask"], 0, np.int64),
        "old_log_probs": scatter(rmask, f["logprobs"], 0.0, np.float32),
        "advantages": scatter(rmask, f["advantages"], 0.0, np.float32),
        "token_level_rewards": scatter(rmask, f["token_rewards"], 0.0, np.float32),
    }


def _packed(f: Mapping[str, np.ndarray], plen: np.ndarray, rlen: np.ndarray) -> Json:
    seq = plen + rlen
    total = int(seq.sum())
    cu = np.zeros(len(seq) + 1, dtype=np.int32)
    np.cumsum(seq, out=cu[1:])
    is_resp = np.repeat(np.tile(np.array([False, True]), len(seq)), np.stack([plen, rlen], axis=1).ravel())

    def place(flat: np.ndarray, dtype: Any) -> np.ndarray:
        out = np.zeros(total, dtype=dtype)
        out[is_resp] = flat
        return out

    input_ids = np.empty(total, dtype=np.int64)
    input_ids[~is_resp] = f["prompt"]
    input_ids[is_resp] = f["response"]
    return {
        "input_ids": input_ids,
        "position_ids": np.arange(total, dtype=np.int64) - np.repeat(cu[:-1].astype(np.int64), seq),
        "cu_seqlens": cu,
        "seq_lens": seq,
        "response_mask": place(f["mask"], np.int64),
        "old_log_probs": place(f["logprobs"], np.float32),
        "advantages": place(f["advantages"], np.float32),
        "token_level_rewards": place(f["token_rewards"], np.float32),
    }


def tensorize_rows(
    rows: Rows,
    *,
    mode: str = "padded",
    backend: str = "numpy",
    pad_token_id: int = 0,
    max_length: int | None = None,
    truncation: str = "error",
) -> Json:
    """Arrays for ``rows`` (see the module docstring for keys, shapes and dtypes)."""
    if mode not in MODES:
        raise BatchError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise BatchError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    plen, rlen = _lengths(rows, "prompt_ids"), _lengths(rows, "response_ids")
    if max_length is not None:
        prompts = _truncate_prompts(rows, plen, rlen, max_length, truncation)
    else:
        prompts = [r["prompt_ids"] for r in rows]
    f = _flat_fields(rows, prompts, plen, rlen)
    out = _padded(f, plen, rlen, pad_token_id) if mode == "padded" else _packed(f, plen, rlen)
    out.update(rewards=f["rewards"], has_log_probs=f["has_log_probs"], prompt_lens=plen, response_lens=rlen)
    if backend == "torch":
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
    return out


def tensorize(
    batch_or_rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    layout: str = "step",
    mode: str = "padded",
    backend: str = "numpy",
    pad_token_id: int = 0,
    max_length: int | None = None,
    truncation: str = "error",
) -> Json:
    """Arrays for a batch answer, a list of groups, or rows from :mod:`steplake.batches.layout`.

    ``layout`` applies when given a batch or groups. ``max_length`` caps prompt + response per row:
    longer rows raise :class:`SequenceTooLongError`, or with ``truncation="left"`` lose prompt tokens
    from the left (responses are never cut).
    """
    return tensorize_rows(
        as_rows(batch_or_rows, layout),
        mode=mode,
        backend=backend,
        pad_token_id=pad_token_id,
        max_length=max_length,
        truncation=truncation,
    )
