"""Helpers for tests that run servers: wait until one answers, stop a process without leaving it behind."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_until_up(url: str, timeout: float = 30, check: Callable[[], None] | None = None,
                  interval: float = 0.05) -> None:
    """Poll ``url`` until it answers 200 (``check`` may raise to stop early, e.g. when the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout:.0f} s"
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


__all__ = ["wait_until_up", "stop_process"]
