"""One writer thread with group commit.

Jobs are closures ``fn(conn) -> result`` run in arrival order. The thread takes every job queued at the
moment it wakes, runs each in its own SAVEPOINT (a failing job is rolled back alone and gets its
exception), then commits once: while one commit is being made durable, the next group accumulates.
A job's result (or error) is delivered only after the commit, so "answered" implies "durable".
A disk-full error (SQLITE_FULL) is delivered as ``StorageFullError`` (HTTP 507) and marks ``health``.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .health import StorageHealth, is_disk_full, storage_full_error

log = logging.getLogger("steplake.store")

Job = tuple[Callable[[sqlite3.Connection], Any], "Future[Any] | None", Callable[[BaseException | None], None] | None]

_STOP = object()


class WriterThread:
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_group: int = 4096,
                 commit_window_ms: float = 0.0, on_commit: Callable[[], None] | None = None,
                 on_rollback: Callable[[], None] | None = None, health: StorageHealth | None = None) -> None:
        self._connect = connect
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_group = max_group
        self._window = commit_window_ms / 1000.0
        self._on_commit = on_commit
        self._on_rollback = on_rollback
        self.health = health
        self._thread = threading.Thread(target=self._run, name="steplake-writer", daemon=True)
        self._closed = False
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        if self._closed:
            raise RuntimeError("store is closed")
        fut: Future[Any] = Future()
        self._q.put((fn, fut, None))
        return fut

    def submit_nowait(self, fn: Callable[[sqlite3.Connection], Any],
                      callback: Callable[[BaseException | None], None] | None) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        self._q.put((fn, None, callback))

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return self.submit(fn).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout=30)

    def _take_group(self, first: Any) -> tuple[list[Job], bool]:
        jobs: list[Job] = [first]
        stop = False
        deadline = time.monotonic() + self._window
        while len(jobs) < self._max_group:
            try:
                item = self._q.get_nowait() if self._window <= 0 else self._q.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            jobs.append(item)
        return jobs, stop

    def _run(self) -> None:
        conn = self._connect()
        stop = False
        while not stop:
            first = self._q.get()
            if first is _STOP:
                break
            jobs, stop = self._take_group(first)
            self._run_group(conn, jobs)
        conn.close()

    def _classify(self, e: BaseException) -> BaseException:
        """A disk-full error becomes ``StorageFullError`` (and marks ``health``); others stay as they are."""
        if not is_disk_full(e):
            return e
        err = storage_full_error(e)
        if self.health is not None:
            self.health.failed(err)
        return err

    def _run_group(self, conn: sqlite3.Connection, jobs: list[Job]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    results.append((fn(conn), None))
                    conn.execute("RELEASE job")
                except BaseException as e:  # the job's own error: undo it alone
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    if self._on_rollback:  # caches may hold what was just undone
                        self._on_rollback()
                    results.append((None, self._classify(e)))
            conn.execute("COMMIT")
            self.commits += 1
            if self.health is not None:
                self.health.committed()
        except BaseException as e:  # the commit itself failed: every job fails
            failure = self._classify(e)
            if failure is e:
                log.exception("group commit failed")
            else:
                log.warning("group commit failed: %s", failure)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if self._on_rollback:
                self._on_rollback()
            results = [(None, failure) for _ in jobs]
        if self._on_commit:
            try:
                self._on_commit()
            except Exception:
                log.exception("on_commit hook failed")
        for (_, fut, cb), (res, err) in zip(jobs, results, strict=True):
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


__all__ = ["WriterThread"]
