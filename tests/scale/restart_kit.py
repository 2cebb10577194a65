"""Helpers for tests that restart PostgreSQL under running ``steplake serve`` processes: a PostgreSQL cluster
of the test's own (own port, own data directory: the shared test server is never restarted), a fake reward
model and LLM judge that count their calls, servers with a config file, SSE readers and /readyz pollers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from steplake.client import SSEParser
from tests.conftest import free_port
from tests.procs import stop_process
from tests.scale.servers import Server, _env, wait_ready

REPO = Path(__file__).resolve().parents[2]
RM_KEY = "rm-secret-" + uuid.uuid4().hex
HEADER_SECRET = "hdr-secret-" + uuid.uuid4().hex
JUDGE_KEY = "judge-secret-" + uuid.uuid4().hex
SECRETS = (RM_KEY, HEADER_SECRET, JUDGE_KEY)
TID_RE = re.compile(r"tr-[0-9a-z-]+")


# -- a PostgreSQL cluster of our own ------------------------------------------------------------------------
def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Cluster:
    url: str
    data: Path
    bin: Path

    def restart(self, down_for: float = 2.0, until: Callable[[], bool] | None = None, max_down: float = 30.0
                ) -> float:
        """``pg_ctl stop -m fast``; at least ``down_for`` seconds without a database and, with ``until``, on until
        ``until()`` holds (say: every server's readiness probe has reported the outage, however loaded the machine;
        at most ``max_down`` seconds); then ``pg_ctl start``. Returns the seconds it took."""
        t0 = time.monotonic()
        ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-t", "60"]
        subprocess.run(_as_pg([*ctl, "stop", "-m", "fast"]), check=True, capture_output=True)
        time.sleep(down_for)
        deadline = time.monotonic() + max_down
        while until is not None and not until() and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(_as_pg([*ctl, "start"]), check=True, capture_output=True)
        return time.monotonic() - t0

    def stop(self) -> None:
        subprocess.run(_as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "stop",
                               "-m", "immediate"]), capture_output=True)


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    """Start a throwaway PostgreSQL (scripts/start_postgres.sh on a free port and a fresh data directory)."""
    binary = pg_bin()
    assert binary is not None, "PostgreSQL binaries not found (apt-get install -y postgresql)"
    data = Path(f"/tmp/steplake-pg-restart-{uuid.uuid4().hex[:10]}")
    env = {**os.environ, "STEPLAKE_PG_PORT": str(free_port()), "STEPLAKE_PG_DATA": str(data),
           "STEPLAKE_PG_DB": "steplake_restart"}
    out = subprocess.run(["bash", str(REPO / "scripts" / "start_postgres.sh")], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    cluster = Cluster(out.stdout.strip().splitlines()[-1], data, binary)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)


# -- a reward model and a judge that count their calls ---------------------------------------------------------
@dataclass
class FakeScorers:
    url: str
    rm_calls: Counter[str] = field(default_factory=Counter)
    judge_calls: Counter[str] = field(default_factory=Counter)
    bad_auth: list[str] = field(default_factory=list)


@contextmanager
def fake_scorers() -> Iterator[FakeScorers]:
    """``POST /score`` (HTTP reward model; echoes the Authorization header it got, as a careless one might)
    and ``POST /v1/chat/completions`` (a judge answering ``Score: 7/10``)."""
    port = free_port()
    scorers = FakeScorers(f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: Any, status: int = 200) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._answer({"data": [{"id": "judge"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
            auth = self.headers.get("authorization", "")
            if self.path == "/score":
                with lock:
                    scorers.rm_calls[str(body.get("trajectory_id"))] += 1
                    if auth != f"Bearer {RM_KEY}" or self.headers.get("x-secret") != HEADER_SECRET:
                        scorers.bad_auth.append("rm")
                self._answer({"score": 0.5, "echo": auth, "model": "fake-rm"})
            else:
                prompt = json.dumps(body.get("messages"))
                with lock:
                    for tid in set(TID_RE.findall(prompt)):
                        scorers.judge_calls[tid] += 1
                    if auth != f"Bearer {JUDGE_KEY}":
                        scorers.bad_auth.append("judge")
                self._answer({"choices": [{"message": {"role": "assistant", "content": f"Fine. ({auth}) Score: 7/10"}}]})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield scorers
    finally:
        server.shutdown()
        server.server_close()


def reward_config(scorers_url: str) -> dict[str, Any]:
    return {"rewards": {"channels": {"train": {"functions": [
        {"name": "http_rm", "component": "rm", "params": {
            "url": f"{scorers_url}/score", "api_key": RM_KEY, "headers": {"X-Secret": HEADER_SECRET}}},
        {"name": "llm_judge", "component": "judge", "params": {
            "base_url": f"{scorers_url}/v1", "api_key": JUDGE_KEY, "model": "judge"}},
    ]}}}}


# -- servers ----------------------------------------------------------------------------------------------------
@contextmanager
def servers(db: str, folder: Path, n: int = 2, config: dict[str, Any] | None = None) -> Iterator[list[Server]]:
    """``n`` ``steplake serve`` processes on ``db``, each with its own working folder (exports land there)."""
    cfg = folder / "steplake.json"
    cfg.write_text(json.dumps(config or {}))
    started: list[Server] = []
    try:
        for i in range(n):
            work = folder / f"server{i}"
            work.mkdir(exist_ok=True)
            port = free_port()
            log = folder / f"server{i}.log"
            proc = subprocess.Popen([sys.executable, "-m", "steplake", "serve", "--db", db, "--port", str(port),
                                     "--upstream", "http://127.0.0.1:9", "--idle-timeout", "600",
                                     "--config", str(cfg)],
                                    env=_env(), cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            started.append(Server(f"http://127.0.0.1:{port}", proc, log))
        for s in started:
            wait_ready(s)
        yield started
    finally:
        for s in started:
            stop_process(s.proc)


def answer_step(tid: str) -> dict[str, Any]:
    return {"step_id": f"{tid}-0", "trajectory_id": tid, "step_index": 0, "prompt_ids": [1, 2, 3],
            "response_ids": [4, 5], "messages": [{"role": "user", "content": "What is 6*7?"}],
            "response": {"content": f"For {tid}: the answer is 42."}, "finish_reason": "stop"}


# -- observers ----------------------------------------------------------------------------------------------------
class SSEReader(threading.Thread):
    """Follows ``/api/v1/events`` from event 0, reconnecting with Last-Event-ID after an end or a drop."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.ids: list[int] = []
        self.errors: list[dict[str, Any]] = []
        self.ends = 0
        self.raw = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        last = 0
        while not self.stop.is_set():
            try:
                with httpx.stream("GET", f"{self.url}/api/v1/events", params={"heartbeat": 1},
                                  headers={"authorization": f"Bearer {self.key}", "last-event-id": str(last)},
                                  timeout=httpx.Timeout(5.0, read=10.0)) as r:
                    if r.status_code != 200:
                        time.sleep(0.2)
                        continue
                    parser = SSEParser()
                    for line in r.iter_lines():
                        self.raw += line.encode() + b"\n"
                        ev = parser.feed(line)
                        if ev is None:
                            if self.stop.is_set():
                                return
                            continue
                        if ev["id"] is None:
                            self.errors.append(ev)
                        else:
                            self.ids.append(ev["id"])
                            last = ev["id"]
                self.ends += 1
            except httpx.HTTPError:
                self.ends += 1
                time.sleep(0.2)


class ReadyPoller(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.not_ready: list[dict[str, Any]] = []
        self.failed: list[str] = []  # probes with no answer (what went wrong)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=10)
                if r.status_code == 503:
                    self.not_ready.append(r.json())
            except httpx.HTTPError as e:
                self.failed.append(f"{time.time():.1f} {type(e).__name__}")
            time.sleep(0.05)

    def saw_outage(self) -> bool:
        """A 503 that said the store is unavailable (and why) came back."""
        return any(b.get("checks", {}).get("store") is False and "unavailable" in b.get("store_error", "")
                   for b in list(self.not_ready))


__all__ = ["own_cluster", "fake_scorers", "reward_config", "servers", "answer_step", "SSEReader", "ReadyPoller",
           "SECRETS", "RM_KEY", "HEADER_SECRET", "JUDGE_KEY", "pg_bin", "Cluster", "FakeScorers"]
