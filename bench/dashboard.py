"""Dashboard overview benchmark: ``Store.read_overview`` latency at a big pool, SQLite or PostgreSQL.

    python bench/dashboard.py                           # 1,000,000-step pool on SQLite (a temp file)
    python bench/dashboard.py --pool-steps 100000       # smaller
    python bench/dashboard.py --db postgresql://...     # the same on PostgreSQL (a schema of its own)

The pool: trajectories of 4 steps (short token ids: the overview reads no ids) in groups of 8, every
trajectory complete with a reward, a tenth curated, two channels, two policy versions; step creation times
spread evenly over the last ``--hours`` hours (default 24), so the default window (30 min) holds about
1/48 of the pool. Measured: p50 / p95 of ``read_overview`` for the dashboard's windows; target p95 ≤ 100 ms
at 1M steps. The answers are checked: ``sampled`` false and the funnel counts the whole pool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from tables import print_rows

from steplake.records import Step

console = Console()
WINDOWS = [(1800.0, 30.0), (6 * 3600.0, 300.0), (86400.0, 300.0), (7 * 86400.0, 3600.0)]  # (window, bucket)


def mk_step(tid: str, i: int, gid: str, channel: str, finish: str | None) -> Step:
    prompt = [1, 2, 3, 4, 5, 6, 7, 8] + [9] * (i * 4)
    return Step.model_construct(
        step_id=f"{tid}-{i}", trajectory_id=tid, group_id=gid, step_index=i, channel=channel, prompt_ids=prompt,
        response_ids=[10 + i] * 4, response_logprobs=[-0.25] * 4, token_source="upstream", messages=None,
        tools=None, response=None, finish_reason=finish, model="bench", sampling=None, usage=None, latency_ms=None,
        policy_version=None, reward=None, metadata={}, provenance={}, continuity=None, parent_step_id=None,
        shared_prefix_len=None, created_at=None)


def open_store(db: str, tmp: Path) -> Any:
    if db == "sqlite":
        from steplake.store.sqlite import SqliteStore

        return SqliteStore(tmp / "overview.db", synchronous="OFF")
    from steplake.store.postgres import PostgresStore

    return PostgresStore(db, schema=f"bench_overview_{os.getpid()}", drop_schema_on_close=True)


def build(store: Any, n_steps: int, steps_per_traj: int = 4, group_size: int = 8) -> int:
    n_traj = n_steps // steps_per_traj
    t0 = time.perf_counter()
    buf: list[Step] = []
    for t in range(n_traj):
        if t == n_traj // 2:
            store.publish_policy(1, None, "bench")
        channel = "train" if (t // group_size) % 10 else "eval"
        for i in range(steps_per_traj):
            buf.append(mk_step(f"T{t}", i, f"G{t // group_size}", channel,
                               "stop" if i == steps_per_traj - 1 else "tool_calls"))
        if len(buf) >= 4096:
            store.append_steps(buf)
            buf = []
    if buf:
        store.append_steps(buf)
    while store.sweep_idle(0, now=time.time() + 10):  # complete every trajectory through the idle rule
        pass
    console.print(f"  pool of {n_traj * steps_per_traj:,} steps built in {time.perf_counter() - t0:.0f} s")
    return n_traj


def spread(db: str, store: Any, hours: float) -> None:
    """Bench set-up only: creation times over the last ``hours``, rewards and a tenth curated, in bulk."""
    now = time.time()
    sql = ["UPDATE steps SET created_at = {now} - {span} * (1.0 - (seq - 1.0) / {n})",
           "UPDATE trajectories SET reward = (seq % 3) * 0.5",
           "UPDATE trajectories SET quality = 'good', curated_at = {now} WHERE seq % 10 = 3"]
    if db == "sqlite":
        import sqlite3

        c = sqlite3.connect(store.path)
        n = c.execute("SELECT max(seq) FROM steps").fetchone()[0]
        for s in sql:
            c.execute(s.format(now=now, span=hours * 3600, n=n))
        c.commit()
        c.close()
        return
    import psycopg

    from steplake.store.postgres import connect_kwargs

    with psycopg.connect(store.url, **connect_kwargs(store.schema)) as pc:
        row = pc.execute("SELECT max(seq) FROM steps").fetchone()
        assert row is not None
        for s in sql:
            pc.execute(s.format(now=now, span=hours * 3600, n=row[0]))  # type: ignore[arg-type]
        # the set-up's UPDATEs left a dead version of every row; a pool's steps are written once (autovacuum
        # keeps it clean): vacuum so the probes don't wade through what only this set-up made
        pc.execute("VACUUM (ANALYZE) steps, trajectories")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(store: Any, n_traj: int, runs: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for window, bucket in WINDOWS:
        lat = []
        for _ in range(runs):
            t0 = time.perf_counter()
            o = store.read_overview(1, window, bucket)
            lat.append((time.perf_counter() - t0) * 1000)
        assert o["sampled"] is False and o["funnel"]["stages"][0]["count"] == n_traj, o["funnel"]
        points = len(o["series"]["points"])
        rows.append((f"overview window {window / 3600:g} h, bucket {bucket:g} s ({points} points)",
                     f"p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms", "p95 ≤ 100 ms",
                     "ok" if pct(lat, 95) <= 100 else "above"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite", help="'sqlite' (temp file) or a postgresql:// URL")
    ap.add_argument("--pool-steps", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=24.0, help="steps' creation times spread over this many hours")
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steplake-bench-"))
    store = open_store(a.db, tmp)
    store.open()
    try:
        console.print(f"[bold]steplake dashboard overview benchmark[/] on {a.db}")
        n_traj = build(store, a.pool_steps)
        spread(a.db, store, a.hours)
        rows = measure(store, n_traj, a.runs)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    backend = "sqlite" if a.db == "sqlite" else "postgresql"
    print_rows(console, f"dashboard overview, {a.pool_steps:,} steps, {backend}, {os.cpu_count()} cores", rows)

if __name__ == "__main__":
    main()
