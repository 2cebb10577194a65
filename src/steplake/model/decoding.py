"""The decoding loop: one sequence, KV cache, sampling, stop handling, forced and constrained segments.

A *plan* is a tuple of segments decoded in order (``FREE_PLAN`` = plain generation):

- ``Forced(text=... | ids=...)`` — tokens appended without sampling. They are part of the response
  ids (from the agent's view the model emitted them); their logprobs are the model's logprobs of those
  tokens, taken from the same forward passes (raw log-softmax in every mode; they were not sampled).
- ``OneOf(options)`` — sampled, restricted to tokens that keep the text a prefix of one option; the
  chosen option's continuation segments follow. No option may be a prefix of another.
- ``JsonValue(schema)`` — sampled, restricted to tokens that keep the text a valid prefix of a JSON
  object following ``schema`` (see ``jsonprefix``); ends as soon as the object is complete.
- ``Free()`` — unrestricted sampling until an end-of-turn token, a stop string, a stop token id or
  ``max_tokens``. Stop strings are only looked for in free segments.

A plan that runs out (no ``Free`` at its end) finishes with ``finish_reason="stop"``. Constrained steps
look at the 200 most likely tokens first and scan the rest of the vocabulary (most likely first) only
when none of those fits; in ``processed`` logprobs mode the reported logprob is that of the constrained
distribution, in ``raw`` mode the model's own (unconstrained) log-softmax.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .jsonprefix import JsonPrefix
from .sampling import LogprobsMode, SamplingParams, choose, make_generator, top_logprobs
from .text import TextTracker, Vocabulary

CANDIDATES = 200
SCAN_CHUNK = 4096


@dataclass(frozen=True)
class Forced:
    text: str = ""
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class OneOf:
    options: dict[str, tuple[Any, ...]]  # option text → continuation segments


@dataclass(frozen=True)
class JsonValue:
    schema: Any = None
    forbid: tuple[str, ...] = ()  # substrings the JSON text may not contain (e.g. a closing tag)
    string_forbid: str = ""  # characters string values may not contain raw (escapes still may)


@dataclass(frozen=True)
class Free:
    pass


Segment = Forced | OneOf | JsonValue | Free
FREE_PLAN: tuple[Segment, ...] = (Free(),)


@dataclass(frozen=True)
class TokenPiece:
    """One response token as it is produced. ``text`` is the visible text it releases (may be empty:
    partial UTF-8 or a possible stop-string start is held back). The last piece has ``finish_reason``
    and (from ``LocalModel.stream``) the ``weights_version`` the whole sequence was decoded with."""

    token_id: int
    logprob: float
    text: str
    top_logprobs: tuple[tuple[int, float], ...] = ()
    forced: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    weights_version: int | None = None


@dataclass(frozen=True)
class Feed:
    """What ``Decoding.steps`` asks for: run ``ids`` through the model (after everything fed before)
    and send back the logits of the last ``keep`` positions ([keep, vocab])."""

    ids: tuple[int, ...]
    keep: int


@dataclass
class Generation:
    """A finished sequence. ``token_ids`` include the end-of-turn token when one was emitted."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    stop_reason: str | int | None = None
    forced: list[bool] = field(default_factory=list)
    weights_version: int | None = None

    def add(self, piece: TokenPiece) -> None:
        self.token_ids.append(piece.token_id)
        self.logprobs.append(piece.logprob)
        self.top_logprobs.append(list(piece.top_logprobs))
        self.forced.append(piece.forced)
        self.text += piece.text
        if piece.finish_reason is not None:
            self.finish_reason = piece.finish_reason
            self.stop_reason = piece.stop_reason
            self.weights_version = piece.weights_version


# forward(ids, cache, keep) -> (logits[keep, vocab], cache)
ForwardFn = Callable[[Sequence[int], Any, int], tuple[torch.Tensor, Any]]


class _OneOfState:
    def __init__(self, seg: OneOf) -> None:
        self.options = {k.encode(): v for k, v in seg.options.items()}
        self.acc = b""

    def allows(self, data: bytes) -> bool:
        new = self.acc + data
        return any(o.startswith(new) for o in self.options)

    def feed(self, data: bytes) -> None:
        self.acc += data

    @property
    def done(self) -> bool:
        return self.acc in self.options

    def continuation(self) -> tuple[Segment, ...]:
        return tuple(self.options[self.acc])


class _JsonState:
    def __init__(self, seg: JsonValue) -> None:
        self.prefix = JsonPrefix(seg.schema, string_forbid=seg.string_forbid.encode())
        self.forbid = tuple(f.encode() for f in seg.forbid if f)
        self.keep = max((len(f) for f in self.forbid), default=1) - 1
        self.tail = b""

    def allows(self, data: bytes) -> bool:
        if self.forbid:
            window = self.tail + data
            if any(f in window for f in self.forbid):
                return False
        return self.prefix.accepts(data)

    def feed(self, data: bytes) -> None:
        self.prefix.feed_bytes(data)
        if self.keep:
            self.tail = (self.tail + data)[-self.keep:]

    @property
    def done(self) -> bool:
        return self.prefix.done

    def continuation(self) -> tuple[Segment, ...]:
        return ()


class Decoding:
    """Decodes one sequence: iterate ``run()`` for ``TokenPiece``s (alone, with its own KV cache), or
    drive ``steps()`` (the scheduler, one row of a batch). Not thread-safe (one thread drives it)."""

    def __init__(self, forward: ForwardFn, tokenizer: Any, vocab: Vocabulary, prompt_ids: Sequence[int],
                 params: SamplingParams, mode: LogprobsMode, eos_ids: frozenset[int],
                 plan: Sequence[Segment] = FREE_PLAN, cancel: threading.Event | None = None) -> None:
        self.forward, self.vocab, self.params, self.mode = forward, vocab, params, mode
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.eos_ids = eos_ids
        self.plan: list[Segment] = list(plan)
        self.cancel = cancel
        self.tracker = TextTracker(tokenizer, params.stop)
        self.generator = make_generator(params.seed)
        self.out: list[int] = []
        self.counts: dict[int, int] = {}
        self.state: _OneOfState | _JsonState | None = None

    def run(self) -> Iterator[TokenPiece]:
        """Decode alone: ``steps()`` driven by ``forward`` with this sequence's own KV cache."""
        steps = self.steps()
        cache: Any = None
        try:
            item = next(steps)
            while True:
                if isinstance(item, Feed):
                    logits, cache = self.forward(item.ids, cache, item.keep)
                    item = steps.send(logits)
                else:
                    yield item
                    item = next(steps)
        except StopIteration:
            return

    def steps(self) -> Generator[Feed | TokenPiece, torch.Tensor | None, None]:
        """The decoding as a coroutine: yields a ``Feed`` (the caller sends back the logits it asks
        for) or a ``TokenPiece`` (the caller sends nothing). Whoever runs the forward passes (``run``
        alone, or the scheduler for a batch) keeps the KV cache."""
        logits = self._logits((yield Feed(tuple(self.prompt_ids), 1)))[0]
        while True:
            seg = self.plan[0] if self.plan else Free()
            if isinstance(seg, Forced):
                self.plan.pop(0)
                ids = self._forced_ids(seg)
                if not ids:
                    continue
                following = self._logits((yield Feed(tuple(ids), len(ids))))
                pieces = self._forced(ids, logits, following)
                for piece in pieces:
                    yield piece
                if pieces[-1].finish_reason is not None:
                    return
                logits = following[-1]
                continue
            piece = self._sample(seg, logits)
            yield piece
            if piece.finish_reason is not None:
                return
            logits = self._logits((yield Feed((piece.token_id,), 1)))[0]

    @staticmethod
    def _logits(sent: torch.Tensor | None) -> torch.Tensor:
        if sent is None:
            raise RuntimeError("a Feed needs the logits sent back")
        return sent

    def _forced_ids(self, seg: Forced) -> list[int]:
        ids = list(seg.ids) or self._encode(seg.text)
        return ids[: self.params.max_tokens - len(self.out)]

    def _forced(self, ids: Sequence[int], logits: torch.Tensor, following: torch.Tensor) -> list[TokenPiece]:
        """Pieces of forced ``ids``: ``logits`` predicted the first, ``following[i]`` the one after ``ids[i]``."""
        dists = [logits, *following[:-1]]
        pieces = []
        for i, (tid, row) in enumerate(zip(ids, dists, strict=True)):
            dist = torch.log_softmax(row, dim=-1)
            top = top_logprobs(dist, self.params.top_logprobs)
            delta, finish, stop = self._accept(tid, free=False, more_forced=i < len(ids) - 1)
            pieces.append(TokenPiece(tid, float(dist[tid]), delta, tuple(top), True, finish, stop))
            if finish is not None:
                break
        return pieces

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _sample(self, seg: Segment, logits: torch.Tensor) -> TokenPiece:
        mask = None
        if isinstance(seg, OneOf | JsonValue):
            if self.state is None:
                self.state = _OneOfState(seg) if isinstance(seg, OneOf) else _JsonState(seg)
            mask = self._mask(self.state, logits)
        choice = choose(logits, self.params, self.mode, self.prompt_ids, self.counts, self.generator, mask)
        if self.state is not None:
            self.state.feed(self.vocab.token_bytes[choice.token_id])
            if self.state.done:
                self.plan[:1] = list(self.state.continuation())
                self.state = None
        delta, finish, stop = self._accept(choice.token_id, free=isinstance(seg, Free))
        return TokenPiece(choice.token_id, choice.logprob, delta, tuple(choice.top), False, finish, stop)

    def _mask(self, state: _OneOfState | _JsonState, logits: torch.Tensor) -> torch.Tensor:
        k = min(CANDIDATES, logits.shape[-1])
        allowed = self._allowed(state, torch.topk(logits, k).indices.tolist())
        if not allowed:
            order = torch.argsort(logits, descending=True).tolist()
            for start in range(k, len(order), SCAN_CHUNK):
                allowed = self._allowed(state, order[start:start + SCAN_CHUNK])
                if allowed:
                    break
        if not allowed:
            raise RuntimeError("constrained decoding found no admissible token")
        mask = torch.full_like(logits, float("-inf"))
        mask[torch.tensor(allowed, dtype=torch.long)] = 0.0
        return mask

    def _allowed(self, state: _OneOfState | _JsonState, ids: Sequence[int]) -> list[int]:
        out = []
        for tid in ids:
            data = self.vocab.constrainable(tid)
            if data and state.allows(data):
                out.append(tid)
        return out

    def _accept(self, tid: int, free: bool, more_forced: bool = False) -> tuple[str, str | None, Any]:
        """Record a token; returns (text delta, finish_reason or None, stop_reason)."""
        self.out.append(tid)
        self.counts[tid] = self.counts.get(tid, 0) + 1
        delta, stop_str = self.tracker.push(tid, check_stop=free)
        finish: str | None = None
        reason: Any = None
        if stop_str is not None:
            finish, reason = "stop", stop_str
        elif free and tid in self.params.stop_token_ids:
            finish, reason = "stop", tid
        elif free and tid in self.eos_ids and not self.params.ignore_eos:
            finish = "stop"
        elif not free and not self.plan and self.state is None and not more_forced:
            finish = "stop"  # the plan ran out
        elif len(self.out) >= self.params.max_tokens:
            finish = "length"
        elif self.cancel is not None and self.cancel.is_set():
            finish = "abort"
        if finish is not None:
            delta += self.tracker.flush()
        return delta, finish, reason


__all__ = ["Forced", "OneOf", "JsonValue", "Free", "Segment", "FREE_PLAN", "TokenPiece", "Generation",
           "Decoding", "ForwardFn", "Feed"]
