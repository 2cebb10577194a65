"""Store availability: whether the database answers, as this process sees it: outages are detected (a lost
connection, a store call that could not reach the server), counted and reported (``/readyz``,
``stats.store``), and the long-lived tasks that depend on the store back off and retry until it answers
again. On the ground floor: the PostgreSQL backend and the pool both use it.

SQLite never has an outage here (a file either opens or the server does not start); PostgreSQL has one
while its server restarts or cannot be reached.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import StoreUnavailableError

# SQLSTATEs of a server that is going away or not accepting connections (class 08: connection exceptions)
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what caused it) means the database could not be reached, not a bad request."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StoreUnavailableError):
            return True
        if _is_psycopg_unavailable(exc):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def _is_psycopg_unavailable(exc: BaseException) -> bool:
    try:
        import psycopg
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg is a dependency, but SQLite needs none of it
        return False
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


class StoreAvailability:
    """Thread-safe outage bookkeeping: ``down`` starts an outage (once), ``up`` ends it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.available = True
        self.outages = 0
        self.unavailable_since: float | None = None
        self.last_error: str | None = None
        self.last_outage_seconds: float | None = None
        self._watchers: list[Callable[[bool], None]] = []

    def watch(self, fn: Callable[[bool], None]) -> None:
        """Call ``fn(available)`` (from any thread) when an outage starts or ends."""
        self._watchers.append(fn)

    def _changed(self, available: bool) -> None:
        for fn in list(self._watchers):
            try:
                fn(available)
            except Exception:  # a watcher's failure must not hide the outage
                pass

    def down(self, error: BaseException | str) -> bool:
        """Record that the store could not be reached; True when this starts a new outage."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {str(error).strip()}"
        with self._lock:
            self.last_error = text[:500]
            if not self.available:
                return False
            self.available = False
            self.outages += 1
            self.unavailable_since = time.time()
        self._changed(False)
        return True

    def up(self) -> bool:
        """Record that the store answers again; True when this ends an outage."""
        if self.available:
            return False
        with self._lock:
            if self.available:
                return False
            self.available = True
            if self.unavailable_since is not None:
                self.last_outage_seconds = round(time.time() - self.unavailable_since, 3)
            self.unavailable_since = None
        self._changed(True)
        return True

    def marker(self) -> tuple[bool, int]:
        """Taken before a store call: ``up_after(marker)`` ends the outage only if the call began during it."""
        return self.available, self.outages

    def up_after(self, marker: tuple[bool, int]) -> None:
        if not marker[0] and marker[1] == self.outages:
            self.up()

    @property
    def reason(self) -> str | None:
        """Why the store is not ready (None while it is)."""
        if self.available:
            return None
        since = self.unavailable_since or time.time()
        return f"store unavailable for {time.time() - since:.1f} s: {self.last_error}"

    def as_dict(self) -> dict[str, Any]:
        return {"available": self.available, "outages": self.outages, "unavailable_since": self.unavailable_since,
                "last_error": self.last_error, "last_outage_seconds": self.last_outage_seconds}


class Backoff:
    """Exponential delays with jitter for retry loops: ``next()`` grows from ``first`` to ``cap``."""

    def __init__(self, first: float = 0.2, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return float(delay * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.failures = 0


__all__ = ["StoreAvailability", "Backoff", "is_unavailable"]
