"""Helpers for tests that run servers: wait until one answers, stop a process without leaving it behind."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


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


@contextmanager
def serve_app(app: Any, port: int, *, ready_path: str | None = "/readyz", timeout: float = 30,
              join: float = 10) -> Iterator[str]:
    """Serve ``app`` with uvicorn from a daemon thread on 127.0.0.1:``port`` (lifespan on, no access log);
    yields its base URL once uvicorn has started and, with ``ready_path``, once that path answers 200.
    The server is stopped (``should_exit``, then a join of ``join`` seconds) however the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        assert thread.is_alive(), f"uvicorn on port {port} exited (see its log above)"

    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            alive()
            assert time.monotonic() < deadline, f"uvicorn on port {port} did not start within {timeout:.0f} s"
            time.sleep(0.02)
        if ready_path is not None:  # the rest of the same deadline
            wait_until_up(url + ready_path, max(deadline - time.monotonic(), 1), alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(join)


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


__all__ = ["serve_app", "wait_until_up", "stop_process"]
