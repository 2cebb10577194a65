"""Storage health: is the database's disk full, so that writes fail?

A disk-full error (SQLite ``SQLITE_FULL``, PostgreSQL ``53100 disk_full``, ``ENOSPC``/``EDQUOT``) becomes a
``StorageFullError`` (HTTP 507 "insufficient storage: ...") and marks the store *full*; ``/readyz`` then
reports not-ready. The mark clears as soon as writes can work again: for a store that can measure its free
space (SQLite: the database's folder) once at least ``MIN_FREE_BYTES`` are free again (a small write may
still fit in the WAL's old pages while the disk is full, so a commit alone proves nothing there); otherwise
(PostgreSQL) at the next successful commit, or ``HOLD_SECONDS`` after the last failure so that callers try
again.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import StorageFullError

MIN_FREE_BYTES = 1 << 20
HOLD_SECONDS = 30.0
_PG_DISK_FULL = "53100"
_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded", "could not extend file")


def is_disk_full(e: BaseException | None) -> bool:
    """True when ``e`` (or what caused it) says the disk or quota is full."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, StorageFullError):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        code = getattr(e, "sqlite_errorcode", None) if isinstance(e, sqlite3.Error) else None
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        if getattr(e, "sqlstate", None) == _PG_DISK_FULL:
            return True
        if (isinstance(e, sqlite3.Error | OSError) or type(e).__module__.startswith("psycopg")) and any(
                t in str(e).lower() for t in _FULL_TEXT):
            return True
        e, seen = e.__cause__, seen + 1
    return False


def storage_full_error(e: BaseException) -> StorageFullError:
    if isinstance(e, StorageFullError):
        return e
    detail = str(e).strip() or type(e).__name__
    return StorageFullError(f"insufficient storage: the database's disk is full ({detail}); nothing was "
                            "written, retry once space is freed")


def folder_free_bytes(path: str | Path) -> Callable[[], int | None]:
    """Free bytes of the filesystem holding ``path`` (its folder), None when it cannot be measured."""
    folder = Path(path).expanduser().resolve().parent

    def free() -> int | None:
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return None
    return free


class StorageHealth:
    """Thread-safe mark set by disk-full errors (see the module docstring for when it clears)."""

    def __init__(self, free_bytes: Callable[[], int | None] | None = None, *,
                 min_free: int = MIN_FREE_BYTES, hold: float = HOLD_SECONDS) -> None:
        self._free_bytes = free_bytes
        self._min_free = min_free
        self._hold = hold
        self._lock = threading.Lock()
        self._error: str | None = None
        self._at = 0.0
        self.failures = 0

    def failed(self, e: BaseException) -> None:
        with self._lock:
            self._error = str(e)[:500]
            self._at = time.monotonic()
            self.failures += 1

    def committed(self) -> None:
        """A write committed: without a way to measure free space, take it as the end of the outage."""
        if self._free_bytes is None and self._error is not None:
            with self._lock:
                self._error = None

    def problem(self) -> str | None:
        """Why writes fail now (None when they should work)."""
        with self._lock:
            if self._error is None:
                return None
            if self._free_bytes is not None:
                free = self._free_bytes()
                if free is not None and free >= self._min_free:
                    self._error = None
                    return None
            elif time.monotonic() - self._at >= self._hold:
                self._error = None
                return None
            return self._error


__all__ = ["StorageHealth", "is_disk_full", "storage_full_error", "folder_free_bytes", "MIN_FREE_BYTES"]
