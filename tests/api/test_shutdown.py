"""Stopping ``steplake serve`` while a dashboard's event stream and a trainer's long poll are open."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.servers import steplake_cmd, subprocess_env
from tests.conftest import free_port
from tests.procs import wait_until_up


def test_sigterm_ends_open_streams_and_long_polls_cleanly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(steplake_cmd("serve", "--db", str(tmp_path / "pool.db"), "--port", str(port),
                                         "--upstream", "http://127.0.0.1:9"),
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def alive() -> None:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        wait_until_up(f"{url}/healthz", check=alive)
        got: dict[str, Any] = {}
        connected = threading.Event()

        def stream() -> None:
            lines = []
            with httpx.stream("GET", f"{url}/api/v1/events", params={"heartbeat": 60}, timeout=30) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if line == ": connected":
                        connected.set()
            got["stream"] = lines

        def long_poll() -> None:
            got["poll"] = httpx.post(f"{url}/api/v1/batches", json={"groups": 1, "wait_seconds": 60}, timeout=30)

        threads = [threading.Thread(target=stream), threading.Thread(target=long_poll)]
        for t in threads:
            t.start()
        assert connected.wait(10)
        time.sleep(0.3)  # the long poll is waiting for a ready group
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - t0
        for t in threads:
            t.join(10)
        out = proc.stdout.read().decode() if proc.stdout else ""
        # uvicorn's graceful-shutdown limit is 5 s; open streams used to hold the server until it cancelled them
        assert took < 4, f"shutdown took {took:.1f} s"
        assert "Traceback" not in out and "CancelledError" not in out, out
        assert got["stream"][:2] == ["retry: 2000", ": connected"]
        assert got["poll"].status_code == 200 and got["poll"].json()["groups"] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
