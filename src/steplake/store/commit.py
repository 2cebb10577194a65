"""Group commit, shared by both stores: one thread takes every job queued when it wakes (plus those arriving
within ``window_ms``, at most ``max_group``), runs them as one transaction (store/writer.py: the SQLite
writer; store/postgres_tx.py: the PostgreSQL committer), then calls ``on_commit`` and delivers each job's
result or error, so "answered" implies "durable"; while one commit is made durable, the next group queues.

A job is ``(fn, future, callback, keys)``: ``fn(handle)`` runs on the backend's transaction handle, its
result goes to ``future`` (``call``) or its error (None on success) to ``callback`` (``submit_nowait``);
``keys`` are the trajectories and groups it writes (PostgreSQL locks them first).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

log = logging.getLogger("steplake.store")

H = TypeVar("H")
Callback = Callable[[BaseException | None], None]
Result = tuple[Any, BaseException | None]
_STOP = object()


class GroupCommit(Generic[H]):
    closed_error: type[Exception] = RuntimeError  # raised by a call on a closed committer

    def __init__(self, *, window_ms: float, max_group: int, on_commit: Callable[[], None] | None,
                 thread_name: str) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._window = window_ms / 1000.0
        self._max_group = max_group
        self._on_commit = on_commit
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._closed = False
        self.commits = 0

    # -- callers ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[[H], Any], keys: Sequence[str] = ()) -> Future[Any]:
        if self._closed:
            raise self.closed_error("store is closed")
        fut: Future[Any] = Future()
        self._q.put((fn, fut, None, keys))
        return fut

    def call(self, fn: Callable[[H], Any], keys: Sequence[str] = ()) -> Any:
        """Run ``fn`` in the next group and return its result once committed."""
        return self.submit(fn, keys).result()

    def submit_nowait(self, fn: Callable[[H], Any], callback: Callback | None, keys: Sequence[str] = ()) -> None:
        if self._closed:
            raise self.closed_error("store is closed")
        self._q.put((fn, None, callback, keys))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout=30)

    # -- the thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is _STOP:
                break
            jobs, stop = self._take(first)
            self._deliver(jobs, self._run_group(jobs))

    def _take(self, first: Any) -> tuple[list[Any], bool]:
        """The group that starts with ``first``; True when close() was asked for meanwhile."""
        jobs: list[Any] = [first]
        deadline = time.monotonic() + self._window
        while len(jobs) < self._max_group:
            try:
                item = self._q.get_nowait() if self._window <= 0 else self._q.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return jobs, True
            jobs.append(item)
        return jobs, False

    def _run_group(self, jobs: list[Any]) -> list[Result]:
        """Run ``jobs`` as one transaction: (result, None) or (None, error) per job."""
        raise NotImplementedError

    def _deliver(self, jobs: list[Any], results: list[Result]) -> None:
        if self._on_commit:
            try:
                self._on_commit()
            except Exception:
                log.exception("on_commit hook failed")
        for (_, fut, cb, _), (res, err) in zip(jobs, results, strict=True):
            if fut is not None:
                if err is None:
                    fut.set_result(res)
                else:
                    fut.set_exception(err)
            if cb is not None:
                try:
                    cb(err)
                except Exception:
                    log.exception("capture callback failed")


__all__ = ["GroupCommit", "Callback", "Result"]
