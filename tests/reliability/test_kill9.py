"""CONTRACT §3 durability: SIGKILL of a real server under a 16-client POST /steps load loses nothing
that was answered 2xx, stores no half request, and the restarted server resumes open trajectories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

CLIENTS = 16
PER_REQUEST = 8


def start(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen([sys.executable, "-m", "steplake", "serve", "--db", str(db), "--port", str(port),
                          "--upstream", "http://127.0.0.1:9"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code in (200, 503):
                return p
        except httpx.HTTPError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError(f"server did not start: {p.stderr.read().decode() if p.stderr else ''}")


def steps_for(client: int, req: int) -> list[dict[str, object]]:
    tid = f"c{client}"
    base = list(range(50))
    out = []
    for j in range(PER_REQUEST):
        i = req * PER_REQUEST + j
        prompt = base + [7] * (i * 3)  # each step's prompt extends the previous step's prompt + response
        out.append({"step_id": f"{tid}-{i}", "trajectory_id": tid, "step_index": i, "prompt_ids": prompt,
                    "response_ids": [7, 7, 7], "response_logprobs": [-0.1, -0.2, -0.3]})
    return out


def test_sigkill_under_load_loses_no_acknowledged_step(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    port = free_port()
    proc = start(db, port)
    acked: list[set[str]] = [set() for _ in range(CLIENTS)]
    sent: list[list[list[str]]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            req = 0
            while not stop.is_set():
                body = steps_for(k, req)
                sent[k].append([s["step_id"] for s in body])  # type: ignore[misc]
                try:
                    r = c.post("/api/v1/steps", json={"steps": body})
                except httpx.HTTPError:
                    return
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] == PER_REQUEST
                acked[k].update(s["step_id"] for s in body)  # type: ignore[misc]
                req += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while sum(map(len, acked)) < 400 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    n_acked = sum(map(len, acked))
    assert n_acked >= 400

    port2 = free_port()
    proc2 = start(db, port2)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=30) as c:
            for k in range(CLIENTS):
                tid = f"c{k}"
                stored: list[str] = []
                cursor = None
                while True:
                    params: dict[str, object] = {"trajectory_id": tid, "limit": 1000, "fields": "meta"}
                    if cursor:
                        params["cursor"] = cursor
                    page = c.get("/api/v1/steps", params=params).json()
                    stored += [s["step_id"] for s in page["items"]]
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
                assert len(stored) == len(set(stored)), "a step is stored twice"
                assert acked[k] <= set(stored), f"acknowledged steps lost: {sorted(acked[k] - set(stored))[:5]}"
                every_sent = {s for req in sent[k] for s in req}
                assert set(stored) <= every_sent
                for req in sent[k]:  # each request is all or nothing
                    assert len(set(req) & set(stored)) in (0, len(req))
                if not stored:
                    continue
                t = c.get(f"/api/v1/trajectories/{tid}").json()
                assert t["status"] == "open"
                n = len(stored)
                nxt = {"step_id": f"{tid}-{n}", "trajectory_id": tid, "step_index": n,
                       "prompt_ids": list(range(50)) + [7] * (n * 3), "response_ids": [7, 7, 7]}
                r = c.post("/api/v1/steps", json={"steps": [nxt]})
                assert r.status_code == 200, r.text
                assert c.get(f"/api/v1/steps/{tid}-{n}").json()["continuity"] == "clean"
    finally:
        proc2.terminate()
        proc2.wait(10)
