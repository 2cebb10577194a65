"""The embedded model server dies with the ``steplake serve`` that started it.

``steplake serve`` stops its model child on its way out, but a server killed without its shutdown path
(SIGKILL, the OOM killer, a crash) cannot: the child would live on with parent pid 1, holding its memory
and port. ``steplake model serve --parent-pid PID`` therefore (1) asks Linux to SIGKILL it when its parent
exits (``prctl(PR_SET_PDEATHSIG)``), (2) exits at once if PID is already gone (the parent died before the
request took effect), and (3) watches ``os.getppid()`` from a thread, on every platform, as a fallback.
The model server holds no state worth a graceful stop, so the exit is immediate.

``die_with_this_process()`` is the same request made from the parent's side (a ``preexec_fn``): ``steplake
demo`` uses it for the ``steplake serve`` it starts, which then shuts down (SIGTERM) when the demo is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Linux only: deliver ``sig`` to this process when its parent exits. False when unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process exits (Linux; a
    no-op elsewhere). libc is loaded here, before the fork, so the child only makes one system call."""
    parent = os.getpid()
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
            if os.getppid() != parent:  # this process died before the request took effect
                os.kill(os.getpid(), sig)

    return preexec


def _orphaned(parent_pid: int) -> None:
    sys.stderr.write(f"steplake model serve: parent process {parent_pid} is gone; exiting\n")
    sys.stderr.flush()
    os._exit(0)


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Exit (immediately, now or later) when ``parent_pid`` is no longer this process's parent."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        _orphaned(parent_pid)

    def watch() -> None:
        while True:
            threading.Event().wait(interval)
            if os.getppid() != parent_pid:
                _orphaned(parent_pid)

    threading.Thread(target=watch, name="steplake-model-lifeline", daemon=True).start()


__all__ = ["exit_with_parent", "set_parent_death_signal", "die_with_this_process"]
