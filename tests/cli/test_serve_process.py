"""A real ``steplake serve``: what it prints at start, and its embedded model child dying with it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.servers import steplake_cmd, subprocess_env
from tests.conftest import PG_URL, free_port
from tests.procs import stop_process, wait_until_up


class Output:
    """A process's merged stdout/stderr, read by a thread as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.text = proc, ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.text += line.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"{needle!r} not printed within {timeout:.0f} s:\n{self.text}"
            assert self.proc.poll() is None or needle in self.text, f"exited {self.proc.returncode}:\n{self.text}"
            time.sleep(0.05)
        return self.text


@contextmanager
def serve(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], Output, str]]:
    port = free_port()
    proc = subprocess.Popen(steplake_cmd("serve", "--port", str(port), *args), env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        yield proc, out, url
    finally:
        stop_process(proc)


def test_serve_prints_where_it_listens(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    with serve("--db", str(db), "--upstream", "http://127.0.0.1:9") as (proc, out, url):
        wait_until_up(url + "/healthz", 60, lambda: None if proc.poll() is None else pytest.fail(out.text))
        text = out.wait_for("does not answer yet")
    assert f"listening on 127.0.0.1:{url.rsplit(':', 1)[1]}" in text
    for line in (f"API:        {url}/api/v1", f"OpenAI:     {url}/v1 ", f"Anthropic:  {url} ",
                 f"Dashboard:  {url}/", f"Database:   SQLite {db}", "Upstream:   http://127.0.0.1:9"):
        assert line in text, (line, text)
    assert "steplake: upstream http://127.0.0.1:9 does not answer yet" in text


def test_serve_never_prints_a_database_password() -> None:
    from steplake.serve_info import redact_db

    shown = redact_db("postgresql://app:s3cret@db.example:5432/pool?schema=a&password=other")
    assert "s3cret" not in shown and "other" not in shown
    assert shown.startswith("PostgreSQL postgresql://app@db.example:5432/pool?schema=a")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_embedded_model_child_dies_with_a_killed_server(tmp_path: Path) -> None:
    with serve("--db", str(tmp_path / "pool.db")) as (proc, out, url):  # no --upstream: the embedded model
        wait_until_up(url + "/healthz", 60, lambda: None if proc.poll() is None else pytest.fail(out.text))
        deadline = time.monotonic() + 10
        while not (kids := _children(proc.pid)):
            assert time.monotonic() < deadline, "serve started no model process"
            time.sleep(0.1)
        child = kids[0]
        assert "steplake.model" in Path(f"/proc/{child}/cmdline").read_text()
        try:
            proc.send_signal(signal.SIGKILL)  # no shutdown path: the child is still loading the model
            proc.wait(10)
            deadline = time.monotonic() + 5
            while _alive(child):
                assert time.monotonic() < deadline, f"the model process {child} outlived its killed server"
                time.sleep(0.1)
        finally:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def test_model_server_started_for_a_parent_already_gone_exits_at_once() -> None:
    # the parent died between the fork and the child's prctl: the pid check catches it
    r = subprocess.run(steplake_cmd("model", "serve", "--parent-pid", "1", "--port", str(free_port())),
                       env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "parent process 1 is gone" in r.stderr


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_killed_demo_takes_its_server_along(tmp_path: Path) -> None:
    port = free_port()  # an unreachable upstream: the demo waits for readiness, no model is loaded
    demo = subprocess.Popen(steplake_cmd("demo", "--port", str(port), "--upstream", "http://127.0.0.1:9",
                                         "--db", str(tmp_path / "demo.db")),
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", 60,
                      lambda: None if demo.poll() is None else pytest.fail(f"demo exited {demo.returncode}"))
        server = next(p for p in _children(demo.pid) if "serve" in Path(f"/proc/{p}/cmdline").read_text())
        demo.send_signal(signal.SIGKILL)
        demo.wait(10)
        deadline = time.monotonic() + 15
        while _alive(server):
            assert time.monotonic() < deadline, f"the demo's server {server} outlived the killed demo"
            time.sleep(0.1)
    finally:
        stop_process(demo)
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)


@pytest.mark.slow
def test_serve_says_when_the_embedded_model_is_ready(tmp_path: Path) -> None:
    with serve("--db", str(tmp_path / "pool.db")) as (proc, out, url):  # no --upstream: the embedded model
        text = out.wait_for("the embedded model is ready", timeout=300)
        assert "Upstream:   the embedded model" in text and "loading" in text
        assert text.index("listening on") < text.index("the embedded model is ready")
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")
def test_serve_on_postgres_prints_the_url_without_its_password() -> None:
    import uuid

    import psycopg

    assert PG_URL and ":postgres@" in PG_URL
    schema = f"banner_{uuid.uuid4().hex[:8]}"
    try:
        with serve("--db", f"{PG_URL}?schema={schema}", "--upstream", "http://127.0.0.1:9") as (proc, out, url):
            text = out.wait_for("Upstream:", timeout=60)
        line = next(ln for ln in text.splitlines() if "Database:" in ln)
        assert line.strip() == f"Database:   PostgreSQL {PG_URL.replace(':postgres@', '@')}?schema={schema}", line
        assert ":postgres@" not in text
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
