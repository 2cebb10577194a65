"""Data Pool benchmark: prints a table to compare against DESIGN §3.

    python bench/pool.py                 # full run: 1,000,000-step pool (a few minutes, ~1 GB temp disk)
    python bench/pool.py --pool-steps 100000 --quick
    python bench/pool.py --db postgresql://...   # same measurements on PostgreSQL

Measures (512-token steps = 384 prompt + 128 response ids, with logprobs):
  1. ingest steps/s through the Store API (append_steps, batches of 256);
  2. ingest steps/s through POST /api/v1/steps (batches of 256, 4 concurrent clients, real server process);
  3. bytes on disk per 20-turn clean trajectory against its unique tokens × 4 bytes (and against no sharing);
  4. POST /api/v1/batches latency for 64 groups × 8 rollouts × 4 steps from a pool of --pool-steps steps;
  5. list query p50/p95 (trajectories and steps pages) at that size.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from tables import print_rows

from steplake.records import BatchIn, Step
from steplake.store import open_store

console = Console()
rows: list[tuple[str, str, str, str]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mk_step(tid: str, i: int, prompt: list[int], resp: list[int], gid: str | None = None,
            finish: str | None = None, messages: list[dict[str, Any]] | None = None) -> Step:
    return Step.model_construct(
        step_id=f"{tid}-{i}", trajectory_id=tid, group_id=gid, step_index=i, channel=None, prompt_ids=prompt,
        response_ids=resp, response_logprobs=[-0.25] * len(resp), token_source="upstream", messages=messages,
        tools=None,
        response=None, finish_reason=finish, model="bench", sampling=None, usage=None, latency_ms=None,
        policy_version=None, reward=None, metadata={}, provenance={}, continuity=None, parent_step_id=None,
        shared_prefix_len=None, created_at=None)


def rand_ids(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(0, 49152) for _ in range(n)]


def new_store(db: str, tmp: Path, name: str) -> Any:
    if db == "sqlite":
        return open_store(str(tmp / f"{name}.db"))
    from steplake.store.postgres import PostgresStore

    return PostgresStore(db, schema=f"bench_{name}_{os.getpid()}", drop_schema_on_close=True)


def bench_store_ingest(db: str, tmp: Path, n: int) -> None:
    rng = random.Random(1)
    store = new_store(db, tmp, "ingest")
    store.open()
    steps = [mk_step(f"t{i}", 0, rand_ids(384, rng), rand_ids(128, rng), gid=f"g{i // 8}") for i in range(n)]
    t0 = time.perf_counter()
    for k in range(0, n, 256):
        store.append_steps(steps[k:k + 256])
    dt = time.perf_counter() - t0
    store.close()
    rows.append(("ingest via Store API (512-token steps, batches of 256)", f"{n / dt:,.0f} steps/s", "≥ 20,000",
                 "ok" if n / dt >= 20000 else "below"))


def start_server(db_arg: str, port: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, STEPLAKE_LOG_LEVEL="warning")
    cmd = [sys.executable, "-m", "steplake", "serve", "--db", db_arg, "--port", str(port),
           "--upstream", "http://127.0.0.1:9", *(extra or [])]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.2)
    p.kill()
    raise RuntimeError(f"server did not start: {p.stderr.read().decode() if p.stderr else ''}")


def bench_http_ingest(db_arg: str, n: int, clients: int = 4, servers: int = 1, prefix: str = "h") -> None:
    ports = [free_port() for _ in range(servers)]
    procs = [start_server(db_arg, p) for p in ports]
    try:
        rng = random.Random(2)
        bodies = []
        for k in range(0, n, 256):
            steps = [{"step_id": f"{prefix}{i}", "trajectory_id": f"{prefix}{i}", "step_index": 0, "prompt_ids": rand_ids(384, rng),
                      "response_ids": (r := rand_ids(128, rng)), "response_logprobs": [-0.25] * len(r)}
                     for i in range(k, min(n, k + 256))]
            bodies.append(orjson.dumps({"steps": steps}))
        idx = iter(range(len(bodies)))
        lock = threading.Lock()
        errors: list[str] = []

        def worker(k: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[k % servers]}", timeout=60) as c:
                while True:
                    with lock:
                        i = next(idx, None)
                    if i is None:
                        return
                    r = c.post("/api/v1/steps", content=bodies[i], headers={"content-type": "application/json"})
                    if r.status_code != 200:
                        errors.append(r.text[:200])
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        rate = n / dt
        rows.append((f"ingest via POST /api/v1/steps ({servers} server{'s' if servers > 1 else ''}, {clients} clients,"
                     " batches of 256)", f"{rate:,.0f} steps/s",
                     "≥ 5,000", ("ok" if rate >= 5000 else "below") + (f", {len(errors)} errors" if errors else "")))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def bench_storage(tmp: Path, n_traj: int = 200, turns: int = 20) -> None:
    rng = random.Random(3)
    path = tmp / "storage.db"
    store = open_store(str(path))
    store.open()
    unique = naive = 0
    for t in range(n_traj):
        seq = rand_ids(300, rng)
        steps = []
        for i in range(turns):
            resp = rand_ids(60, rng)
            steps.append(mk_step(f"s{t}", i, list(seq), resp))
            naive += len(seq) + len(resp)
            seq = seq + resp + rand_ids(40, rng)
        unique += len(seq) - 40
        store.append_steps(steps)
    store.close()
    import sqlite3

    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ids_bytes = c.execute("SELECT sum(length(prompt_tail) + length(response_ids)) FROM steps").fetchone()[0]
    lp_bytes = c.execute("SELECT sum(length(response_logprobs)) FROM steps").fetchone()[0]
    c.execute("VACUUM")
    c.close()
    size = path.stat().st_size
    ratio_ids = ids_bytes / (unique * 4)
    rows.append(("20-turn clean trajectory: stored id bytes / (unique tokens × 4)", f"{ratio_ids:.3f}", "≤ 1.3",
                 "ok" if ratio_ids <= 1.3 else "above"))
    rows.append(("  same, whole file (ids + logprobs + rows + indexes)", f"{size / (unique * 4):.3f}", "info",
                 f"logprobs {lp_bytes / (unique * 4):.2f}; without sharing ids alone would be {naive / unique:.1f}×"))


def build_big_pool(store: Any, n_steps: int, steps_per_traj: int = 4, group_size: int = 8) -> int:
    rng = random.Random(4)
    base = rand_ids(2048, rng)
    n_traj = n_steps // steps_per_traj
    t0 = time.perf_counter()
    buf: list[Step] = []
    for t in range(n_traj):
        gid = f"G{t // group_size}"
        seq = base[rng.randrange(0, 1500):][:256]
        msgs: list[dict[str, Any]] = [{"role": "user", "content": f"Task {t}: multiply {t % 97} by {t % 89} with "
                                       "the calculator, then report the result."}]
        for i in range(steps_per_traj):
            resp = base[i * 7: i * 7 + 64]
            buf.append(mk_step(f"T{t}", i, list(seq), resp, gid=gid,
                               finish="stop" if i == steps_per_traj - 1 else "tool_calls", messages=list(msgs)))
            msgs += [{"role": "assistant", "content": f"calling the calculator (turn {i})"},
                     {"role": "tool", "content": f"result {(t % 97) * (t % 89) + i}"}]
            seq = seq + resp + base[i * 11: i * 11 + 32]
        if len(buf) >= 1024:
            store.append_steps(buf)
            buf = []
    if buf:
        store.append_steps(buf)
    # group sizes: 8 rollouts per group, then close everything through the idle rule and give rewards
    store.sweep_idle(0, now=time.time() + 10)
    while store.sweep_idle(0, now=time.time() + 10):
        pass
    console.print(f"  pool of {n_traj * steps_per_traj:,} steps built in {time.perf_counter() - t0:.0f} s")
    return n_traj


def set_rewards_and_sizes(db: str, tmp: Path, store: Any, group_size: int) -> None:
    """Bench set-up only: give every trajectory an outcome reward and every group its size, in bulk."""
    if db == "sqlite":
        import sqlite3

        c = sqlite3.connect(tmp / "big.db")
        c.execute("UPDATE trajectories SET reward = (seq % 3) * 0.5")
        c.execute("UPDATE groups SET size = ?", (group_size,))
        c.commit()
        c.close()
        return
    import psycopg

    from steplake.store.postgres import connect_kwargs

    with psycopg.connect(store.url, **connect_kwargs(store.schema)) as c:
        c.execute("UPDATE trajectories SET reward = (seq % 3) * 0.5")
        c.execute("UPDATE groups SET size = %s", (group_size,))


def pg_url(store: Any) -> str:
    return f"{store.url}{'&' if '?' in store.url else '?'}schema={store.schema}"


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_big(db: str, tmp: Path, n_steps: int, quick: bool) -> None:
    store = new_store(db, tmp, "big")
    store.open()
    build_big_pool(store, n_steps)
    set_rewards_and_sizes(db, tmp, store, 8)
    if db == "sqlite":
        store.close()
        db_arg = str(tmp / "big.db")
        store = new_store(db, tmp, "big")
        store.open()
    else:
        db_arg = pg_url(store)
    from steplake.pool.batching import build_batch_answer

    def store_batch() -> None:
        req = BatchIn(groups=64, recipe=None, lease_seconds=3600)
        sel = store.select_batch(req)
        ans = build_batch_answer(store, req, sel)
        assert len(ans["groups"]) == 64, ans["excluded"]
        orjson.dumps(ans)
    lat = timed(store_batch, 5 if quick else 10)
    rows.append((f"batch 64 groups × 8 × 4 steps from {n_steps:,} steps (Store + answer JSON)",
                 f"p50 {pct(lat, 50):.0f} ms, max {max(lat):.0f} ms", "≤ 300 ms", "ok" if pct(lat, 50) <= 300 else "above"))
    port = free_port()
    proc = start_server(db_arg, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            def http_batch(recipe: str | None = "grpo") -> None:
                r = c.post("/api/v1/batches", json={"channel": "train", "groups": 64, "recipe": recipe})
                assert r.status_code == 200 and len(r.json()["groups"]) == 64, r.text[:300]
            lat = timed(http_batch, 5 if quick else 10)
            rows.append(("POST /api/v1/batches grpo, 64 × 8 × 4 (HTTP, JSON answer)",
                         f"p50 {pct(lat, 50):.0f} ms, max {max(lat):.0f} ms", "≤ 300 ms",
                         "ok" if pct(lat, 50) <= 300 else "above"))
            queries = {
                "trajectories page (newest 50)": "/api/v1/trajectories?limit=50",
                "trajectories filtered (status, min_reward)": "/api/v1/trajectories?limit=50&status=complete&min_reward=0.5",
                "trajectories page 2 (cursor)": None,
                "steps page without ids (newest 50)": "/api/v1/steps?limit=50&fields=meta",
                "steps of one trajectory, full ids": "/api/v1/steps?trajectory_id=T123&limit=50",
                "message search, rare text (q=Task 123457:)": "/api/v1/trajectories?limit=50&q=Task%20123457:",
                "message search, text in every trajectory (q=calculator)": "/api/v1/trajectories?limit=50&q=calculator",
                "message search, 2 characters (q=zq)": "/api/v1/trajectories?limit=50&q=zq",
            }
            cur = c.get("/api/v1/trajectories?limit=50").json()["next_cursor"]
            queries["trajectories page 2 (cursor)"] = f"/api/v1/trajectories?limit=50&cursor={cur}"
            for name, url in queries.items():
                assert url is not None
                lat = timed(lambda u=url: c.get(u).raise_for_status(), 20 if quick else 50)
                rows.append((f"list: {name}", f"p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms", "p95 ≤ 100 ms",
                             "ok" if pct(lat, 95) <= 100 else "above"))
    finally:
        proc.terminate()
        proc.wait(10)
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite", help="'sqlite' (temp file) or a postgresql:// URL")
    ap.add_argument("--ingest-steps", type=int, default=20480)
    ap.add_argument("--pool-steps", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (bench/compare.py)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steplake-bench-"))
    try:
        console.print(f"[bold]steplake pool benchmark[/] on {a.db}, tmp {tmp}")
        bench_store_ingest(a.db, tmp, a.ingest_steps)
        if a.db == "sqlite":
            bench_http_ingest(str(tmp / "http.db"), a.ingest_steps)
        else:
            from steplake.store.postgres import PostgresStore

            pg = PostgresStore(a.db, schema=f"bench_http_{os.getpid()}", drop_schema_on_close=True)
            pg.open()
            try:
                bench_http_ingest(pg_url(pg), a.ingest_steps, prefix="one")
                bench_http_ingest(pg_url(pg), a.ingest_steps, servers=2, prefix="two")
            finally:
                pg.close()
        if a.db == "sqlite":
            bench_storage(tmp)
        if not a.skip_big:
            bench_big(a.db, tmp, a.pool_steps, a.quick)
    finally:
        print_rows(console, f"steplake pool benchmark ({a.db}, {os.cpu_count()} cores)", rows)
        if a.json:
            a.json.write_bytes(orjson.dumps({"bench": "pool", "db": a.db, "rows": rows}))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
