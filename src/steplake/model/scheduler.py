"""The decode scheduler: one thread runs batched decode steps across every active sequence.

A submitted sequence is a ``Decoding`` driven through its ``steps()`` coroutine. The scheduler admits it
at the next step boundary (at most ``max_batch`` sequences are active; the others wait, first come first
served) and *prefills* it alone, with its own KV cache: the prompt, and any multi-token forced segment
that follows it, in one forward pass each. Then the sequence joins the running batch (``BatchCache``:
its cache becomes a row, left-padded) and each step feeds one token per row in one forward pass; the
logits go back to each row's decoding, which samples (its own parameters, seed, constraints and stop
rules) and asks for the next feed. A forced segment met later is fed one token per step inside the batch
(no row waits for another). A finished sequence leaves the batch at once, as does one whose reader went
away (``Handle.detach``). A batch of one row runs exactly like a sequence decoded alone (no mask, and
forced segments in one pass).

``when_idle(fn)`` runs ``fn`` between steps once no sequence is active, holding new ones back until it
is done: the weight swap, so sequences in flight finish on the weights they started with.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from .decoding import Decoding, Feed, TokenPiece
from .kvbatch import BatchCache

log = logging.getLogger(__name__)

Emit = Callable[[TokenPiece | BaseException | None], None]  # a piece, the error that ended it, or None: done
Steps = Generator[Feed | TokenPiece, torch.Tensor | None, None]


class Handle:
    """A submitted sequence, as its reader sees it."""

    def __init__(self) -> None:
        self.detached = False
        self.weights_version: int | None = None  # the weights it runs on, once admitted

    def detach(self) -> None:
        """Nobody reads the sequence any more: the scheduler drops it at the next step."""
        self.detached = True


@dataclass(eq=False)
class _Seq:
    steps: Steps
    emit: Emit
    handle: Handle
    feed: tuple[int, ...] = ()
    keep: int = 1
    fed: int = 0
    got: list[torch.Tensor] = field(default_factory=list)
    length: int = 0  # tokens in its cache
    cache: Any = None  # its own cache, until it joins the batch


@dataclass(eq=False)
class _Exclusive:
    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


ForwardFn = Callable[..., Any]  # forward(input_ids, cache, logits_to_keep, **kwargs) -> (logits, cache)


class Scheduler:
    """See the module docstring. ``forward`` runs the current model; ``version`` reads its weights version."""

    def __init__(self, forward: ForwardFn, max_batch: int, version: Callable[[], int] = lambda: 0) -> None:
        self.forward, self.max_batch, self.version = forward, max_batch, version
        self.batch = BatchCache()
        self.rows: list[_Seq] = []
        self._waiting: deque[_Seq] = deque()
        self._exclusive: list[_Exclusive] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps_run = 0  # batched forward passes
        self.largest = 0  # most rows decoded together so far

    # -- callers' side ---------------------------------------------------------------------------------
    def submit(self, decoding: Decoding, emit: Emit) -> Handle:
        seq = _Seq(decoding.steps(), emit, Handle())
        with self._cv:
            self._waiting.append(seq)
            self._start()
            self._cv.notify()
        return seq.handle

    def when_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the decode thread once no sequence is active (new ones wait); blocks until done."""
        job = _Exclusive(fn)
        with self._cv:
            self._exclusive.append(job)
            self._start()
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error

    def stats(self) -> dict[str, int]:
        """``max_batch``, sequences ``active`` and ``waiting`` now, ``paused`` (a weight swap waits for the
        sequences in flight: 1, else 0), ``largest`` batch so far, ``steps`` run."""
        return {"max_batch": self.max_batch, "active": len(self.rows), "waiting": len(self._waiting),
                "paused": int(bool(self._exclusive)), "largest": self.largest, "steps": self.steps_run}

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="steplake-model-decode", daemon=True)
            self._thread.start()

    # -- the decode thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                try:
                    self._iteration()
                except Exception as exc:  # a failed batched forward: every active sequence gets the error
                    log.exception("decode step failed")
                    self._fail_all(exc)

    def _iteration(self) -> None:
        with self._cv:
            while not (self._waiting or self.rows or self._exclusive):
                self._cv.wait()
            exclusive = self._exclusive[:] if self._exclusive and not self.rows else []
            admit: list[_Seq] = []
            while not self._exclusive and self._waiting and len(self.rows) + len(admit) < max(1, self.max_batch):
                admit.append(self._waiting.popleft())
            del self._exclusive[: len(exclusive)]
        for job in exclusive:
            try:
                job.fn()
            except BaseException as exc:  # handed to the caller
                job.error = exc
            job.done.set()
        for seq in admit:
            self._prefill(seq)
        self._drop([i for i, seq in enumerate(self.rows) if seq.handle.detached])
        if self.rows:
            self._step()

    def _advance(self, seq: _Seq, logits: torch.Tensor | None) -> bool:
        """Send ``logits`` (None: start), emit the pieces up to the next feed; False once it ended."""
        try:
            item = next(seq.steps) if logits is None else seq.steps.send(logits)
            while not isinstance(item, Feed):
                if item.finish_reason is not None:
                    item = dataclasses.replace(item, weights_version=seq.handle.weights_version)
                seq.emit(item)
                item = next(seq.steps)
        except StopIteration:
            seq.emit(None)
            return False
        except Exception as exc:
            seq.emit(exc)
            return False
        seq.feed, seq.keep, seq.fed, seq.got = item.ids, item.keep, 0, []
        return True

    def _prefill(self, seq: _Seq) -> None:
        """Feed a new sequence alone while it asks for more than one token at a time, then let it join."""
        if seq.handle.detached:
            seq.emit(None)
            return
        seq.handle.weights_version = self.version()
        if not self._advance(seq, None):
            return
        while True:
            ids = seq.feed[seq.fed:]
            try:
                logits, seq.cache = self.forward(ids, seq.cache, min(seq.keep, len(ids)))
            except Exception as exc:
                seq.emit(exc)
                return
            seq.length += len(ids)
            if not self._advance(seq, logits):
                return
            if len(seq.feed) == 1:
                break
        try:
            self.batch.join(seq.cache, seq.length)
        except Exception as exc:
            seq.emit(exc)
            return
        seq.cache = None
        self.rows.append(seq)

    def _step(self) -> None:
        """One forward pass over the batch; rows whose feed is complete get their logits."""
        rows = self.rows
        if len(rows) == 1 and not self.batch.padded:
            seq = rows[0]
            ids = [list(seq.feed[seq.fed:])]
            keep = min(seq.keep, len(ids[0]))
            logits, _ = self.forward(ids[0], self.batch.cache, keep)
            self.batch.advance(len(ids[0]))
            seq.fed = len(seq.feed)
            seq.got.append(logits)
        else:
            ids = [[seq.feed[seq.fed]] for seq in rows]
            logits, _ = self.forward(ids, self.batch.cache, 1, **self.batch.step_kwargs())
            self.batch.advance(1)
            for i, seq in enumerate(rows):
                seq.fed += 1
                if seq.fed > len(seq.feed) - seq.keep:
                    seq.got.append(logits[i : i + 1])
        self.steps_run += 1
        self.largest = max(self.largest, len(rows))
        ended = [i for i, seq in enumerate(rows)
                 if seq.fed == len(seq.feed) and not self._advance(seq, torch.cat(seq.got) if len(seq.got) > 1
                                                                   else seq.got[0])]
        self._drop(ended)

    def _drop(self, indices: list[int]) -> None:
        if not indices:
            return
        for i in indices:
            if self.rows[i].handle.detached:
                self.rows[i].steps.close()
        self.batch.drop(indices)
        self.rows = [seq for i, seq in enumerate(self.rows) if i not in set(indices)]

    def _fail_all(self, exc: Exception) -> None:
        for seq in self.rows:
            seq.emit(exc)
        self.rows = []
        self.batch.reset()


__all__ = ["Scheduler", "Handle", "Emit"]
