"""Helpers for tests that need particular samples from the embedded model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .decoding import Generation
from .engine import LocalModel
from .sampling import SamplingParams


def reencodes_differently(model: LocalModel, gen: Generation) -> bool:
    """Whether decoding the sampled ids to text and encoding that text again gives other ids."""
    ids = [t for t in gen.token_ids if t not in model.vocabulary.special_ids]
    return model.encode(model.decode(ids, skip_special_tokens=True)) != ids


def non_canonical_sample(model: LocalModel, prompt_ids: Sequence[int], *, temperature: float = 1.6,
                         max_tokens: int = 32, seeds: Iterable[int] = range(64)) -> tuple[int, Generation]:
    """The first seed (and its generation) whose sampled ids are not what the tokenizer makes of their
    text: decode → encode does not round-trip. The server reproduces it with the same ``seed``,
    ``temperature`` and ``max_tokens`` (``n == 1``, no other sampling options)."""
    for seed in seeds:
        gen = model.generate(prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed))
        if reencodes_differently(model, gen):
            return seed, gen
    raise LookupError("no seed gave a non-canonical tokenization")


__all__ = ["reencodes_differently", "non_canonical_sample"]
