"""Sampling parameters and logits processing (penalties, temperature, top-k, top-p)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .constants import LOGPROBS_MODES, LogprobsMode


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one sequence. ``temperature == 0`` is greedy; ``top_k <= 0`` disables top-k.

    ``logprobs_mode`` None means the model's default (``LocalModel(logprobs_mode=...)``): ``raw`` is the
    log-softmax of the model's logits, ``processed`` the log-probability under the distribution actually
    sampled from (after penalties, temperature, top-k and top-p).
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_logprobs: int = 0
    logprobs_mode: LogprobsMode | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= -1, "top_k must be -1, 0 (disabled) or positive"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (0 < self.repetition_penalty <= 10, "repetition_penalty must be in (0, 10]"),
            (0 <= self.top_logprobs <= 20, "top_logprobs must be in [0, 20]"),
            (self.logprobs_mode in (None, *LOGPROBS_MODES), "logprobs_mode must be raw or processed"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def penalize(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int],
             output_counts: dict[int, int]) -> torch.Tensor:
    """Presence/frequency penalties (OpenAI, over the output) and repetition penalty (prompt + output)."""
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | output_counts.keys()), dtype=torch.long)
        if len(seen):
            logits = logits.clone()
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / params.repetition_penalty,
                                       vals * params.repetition_penalty)
    if output_counts and (params.presence_penalty or params.frequency_penalty):
        ids = torch.tensor(list(output_counts.keys()), dtype=torch.long)
        counts = torch.tensor(list(output_counts.values()), dtype=logits.dtype)
        logits = logits.clone()
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
    return logits


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p; filtered entries become -inf. Needs temperature > 0."""
    out = logits / params.temperature
    if params.top_k > 0 and params.top_k < out.shape[-1]:
        kth = torch.topk(out, params.top_k).values[-1]
        out = out.masked_fill(out < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_vals, order = torch.sort(out, descending=True)
        probs = torch.softmax(sorted_vals, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each entry
        drop = before > params.top_p
        drop[0] = False
        out = out.clone()
        out[order[drop]] = float("-inf")
    return out


@dataclass
class Choice:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


def choose(logits: torch.Tensor, params: SamplingParams, mode: LogprobsMode, prompt_ids: Sequence[int],
           output_counts: dict[int, int], generator: torch.Generator,
           mask: torch.Tensor | None = None) -> Choice:
    """Sample one token from ``logits`` ([vocab], float32). ``mask``: additive (0 / -inf) constraint."""
    pen = penalize(logits, params, prompt_ids, output_counts)
    if mask is not None:
        pen = pen + mask
    if params.temperature == 0:
        processed = pen
        token = int(torch.argmax(pen))
    else:
        processed = warp(pen, params)
        probs = torch.softmax(processed, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=generator))
    dist = torch.log_softmax(logits if mode == "raw" else processed, dim=-1)
    return Choice(token, float(dist[token]), top_logprobs(dist, params.top_logprobs))


def top_logprobs(dist: torch.Tensor, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    vals, idx = torch.topk(dist, k)
    return [(int(i), float(v)) for i, v in zip(idx.tolist(), vals.tolist(), strict=True)]


def make_generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen


__all__ = ["SamplingParams", "LogprobsMode", "LOGPROBS_MODES", "penalize", "warp", "choose", "Choice",
           "top_logprobs", "make_generator"]
