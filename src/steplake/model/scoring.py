"""Per-position logprobs of a token sequence under the model (vLLM's ``prompt_logprobs``), from logits.

``score_positions`` turns the logits of one forward pass into, for each scored token, its raw logprob
(log-softmax of the logits), its rank in the whole vocabulary (1 = most likely; ties count against the
token, as vLLM counts ``logprob >= own``) and the ``k`` most likely tokens with their logprobs. The rows
are processed in chunks so a long sequence never holds more than one extra chunk of the distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

MAX_PROMPT_LOGPROBS = 20
ROW_CHUNK = 128


@dataclass(frozen=True)
class PositionLogprobs:
    """The scored token of one position, its logprob and vocabulary rank, and the top-``k`` alternatives
    (most likely first)."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...] = ()


def score_positions(logits: torch.Tensor, targets: Sequence[int], k: int = 0) -> list[PositionLogprobs]:
    """``logits[i]`` ([n, vocab]) is the distribution that predicted ``targets[i]``."""
    if logits.shape[0] != len(targets):
        raise ValueError(f"{logits.shape[0]} rows of logits for {len(targets)} targets")
    if not 0 <= k <= MAX_PROMPT_LOGPROBS:
        raise ValueError(f"k must be in [0, {MAX_PROMPT_LOGPROBS}]")
    out: list[PositionLogprobs] = []
    index = torch.tensor(list(targets), dtype=torch.long).unsqueeze(1)
    for start in range(0, len(targets), ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        dist = torch.log_softmax(logits[rows].float(), dim=-1)
        own = dist.gather(1, index[rows])
        ranks = (dist >= own).sum(dim=-1).tolist()
        top_vals, top_ids = torch.topk(dist, k, dim=-1) if k else (None, None)
        for i, (tid, lp, rank) in enumerate(zip(targets[rows], own.squeeze(1).tolist(), ranks, strict=True)):
            top: tuple[tuple[int, float], ...] = ()
            if top_ids is not None and top_vals is not None:
                top = tuple(zip(top_ids[i].tolist(), top_vals[i].tolist(), strict=True))
            out.append(PositionLogprobs(int(tid), float(lp), int(rank), top))
    return out


__all__ = ["PositionLogprobs", "score_positions", "MAX_PROMPT_LOGPROBS"]
