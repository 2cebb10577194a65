"""Disk full (a small tmpfs holding the database of a real ``steplake serve --capture-sync``): writes answer
507 "insufficient storage", gateway calls whose capture cannot be stored fail with a 503 in the agent's
protocol (the stream's error event when streaming), ``/readyz`` reports not-ready while writes fail, and
everything recovers once space is freed. Needs root to mount the tmpfs (CI runs as root)."""

from __future__ import annotations

import errno
import os
import random
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.servers import steplake_cmd, subprocess_env
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.gateway.test_openai import sse
from tests.procs import stop_process, wait_until_up

IS_ROOT = os.geteuid() == 0
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not IS_ROOT and not os.environ.get("CI"), reason="mounting a tmpfs needs root")]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def server(disk: Path, tmp_path: Path) -> Iterator[str]:
    up = FakeUpstreamThread(free_port()).start()
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(steplake_cmd("serve", "--db", str(disk / "pool.db"), "--port", str(port),
                                         "--upstream", f"vllm+{up.url}", "--capture-sync"),
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/readyz", timeout=60, check=lambda: _alive(proc, tmp_path))
        yield url
    finally:
        stop_process(proc)
        log.close()
        up.stop()


def _alive(proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    if proc.poll() is not None:
        raise AssertionError((tmp_path / "server.log").read_text()[-3000:])


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full (down to the last page)."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096):
            block = b"\xff" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


def big_step(i: int) -> dict[str, Any]:
    rnd = random.Random(i)
    return {"step_id": f"big-{i}", "trajectory_id": "t-disk", "step_index": i,
            "prompt_ids": [rnd.randrange(50_000) for _ in range(400_000)], "response_ids": [1, 2, 3]}


def big_chat(stream: bool = False) -> dict[str, Any]:
    text = secrets.token_hex(300_000)  # stored as messages, prompt ids and search text: megabytes
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}


def test_disk_full_answers_507_reports_not_ready_and_recovers(server: str, disk: Path) -> None:
    c = httpx.Client(base_url=server, timeout=60)
    assert c.post("/api/v1/trajectories", json={"trajectory_id": "t-disk"}).status_code == 201
    filler = fill(disk)

    r = c.post("/api/v1/steps", json={"steps": [big_step(0)]})
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_storage" and err["message"].startswith("insufficient storage")
    r = c.post("/api/v1/trajectories", json={"metadata": {"blob": secrets.token_hex(1_500_000)}})
    assert r.status_code == 507, r.text
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"] is False
    assert "disk is full" in ready.json()["storage_error"]

    # --capture-sync: the upstream answered, the capture cannot be stored, so the call fails
    r = c.post("/v1/chat/completions", json=big_chat())
    assert r.status_code == 503 and r.json()["error"]["code"] == "capture_failed"
    assert "insufficient storage" in r.json()["error"]["message"]
    r = c.post("/v1/messages", json={**big_chat(), "max_tokens": 8})
    assert r.status_code == 503 and r.json()["type"] == "error"
    events = sse(c.post("/v1/chat/completions", json=big_chat(stream=True)).text)
    assert events[-1]["error"]["code"] == "capture_failed" and "[DONE]" not in events
    stats = c.get("/api/v1/stats").json()
    assert stats["captures"]["failed"] == 3 == stats["gateway"]["capture"]["failed"]
    assert stats["captures"]["committed"] == 0

    filler.unlink()  # space returns: ready again, writes and captures work
    assert c.get("/readyz").status_code == 200
    r = c.post("/api/v1/steps", json={"steps": [big_step(0)]})
    assert r.status_code == 200, r.text
    r = c.post("/v1/chat/completions", json=big_chat())
    assert r.status_code == 200, r.text
    stats = c.get("/api/v1/stats").json()
    assert stats["steps"] == 2 and stats["captures"]["committed"] == 1
