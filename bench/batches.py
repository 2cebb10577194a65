"""Batch benchmark: recipe and tensorization cost of a 64 groups × 8 rollouts × 4 steps batch.

    python bench/batches.py                       # 1,000,000-step pool (a few minutes, ~2 GB temp disk)
    python bench/batches.py --pool-steps 100000   # smaller pool, same batch size
    python bench/batches.py --reps 3 --groups 16

The pool (temp SQLite file) holds 4-step clean trajectories in groups of 8; a step averages 512 tokens
(prompt 304 + 96 per turn, responses of 64 ids with logprobs). Trajectories are closed through the idle
rule (``sweep_idle``) and get rewards ``(seq % 3) * 0.5`` by a direct SQL UPDATE, as bench/pool.py does.

For each recipe (grpo, rloo, reinforce_pp, ppo, dpo, sft), median over ``--reps`` batches:
  select         Store.select_batch alone (finding and leasing 64 ready groups)
  select+answer  Store.select_batch (leasing 64 groups) + build_batch_answer with the recipe: what
                 POST /api/v1/batches does before JSON encoding (the DESIGN §3 target: ≤ 300 ms for GRPO)
  recipe         apply_recipe alone on the answer's groups
  json           orjson encoding of the answer
  padded/packed  steplake.batches.tensorize, numpy and torch backends (step layout)
  parquet        steplake.batches.export.write_export of the batch's steps, rows (= steps) per second
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from steplake.batches import RECIPES, apply_recipe, tensorize
from steplake.pool.batching import build_batch_answer
from steplake.records import BatchIn, Step
from steplake.store.sqlite import SqliteStore

console = Console(width=160)

STEPS_PER_TRAJ, GROUP_SIZE = 4, 8
PROMPT0, RESPONSE, TOOL = 304, 64, 32  # step k: prompt 304 + 96 k, response 64 -> mean 512 tokens


def mk_step(tid: str, i: int, prompt: list[int], resp: list[int], gid: str, finish: str) -> Step:
    return Step.model_construct(
        step_id=f"{tid}-{i}", trajectory_id=tid, group_id=gid, step_index=i, channel=None, prompt_ids=prompt,
        response_ids=resp, response_logprobs=[-0.25] * len(resp), token_source="upstream", messages=None,
        tools=None, response=None, finish_reason=finish, model="bench", sampling=None, usage=None,
        latency_ms=None, policy_version=None, reward=None, metadata={}, provenance={}, continuity=None,
        parent_step_id=None, shared_prefix_len=None, created_at=None)


def build_pool(path: Path, n_steps: int) -> tuple[int, float]:
    """Fill ``path`` with ``n_steps`` steps; returns (trajectories, seconds)."""
    rng = random.Random(4)
    base = [rng.randrange(0, 49152) for _ in range(4096)]
    n_traj = n_steps // STEPS_PER_TRAJ
    t0 = time.perf_counter()
    store = SqliteStore(path)
    store.open()
    buf: list[Step] = []
    for t in range(n_traj):
        start = rng.randrange(0, 2048)
        seq = base[start : start + PROMPT0]
        for i in range(STEPS_PER_TRAJ):
            resp = base[i * 7 + t % 97 :][:RESPONSE]
            last = i == STEPS_PER_TRAJ - 1
            buf.append(mk_step(f"T{t}", i, list(seq), resp, f"G{t // GROUP_SIZE}", "stop" if last else "tool_calls"))
            seq = seq + resp + base[i * 11 : i * 11 + TOOL]
        if len(buf) >= 1024:
            store.append_steps(buf)
            buf = []
    if buf:
        store.append_steps(buf)
    while store.sweep_idle(0, now=time.time() + 10):
        pass
    store.close()
    c = sqlite3.connect(path)
    c.execute("UPDATE trajectories SET reward = (seq % 3) * 0.5")
    c.execute("UPDATE groups SET size = ?", (GROUP_SIZE,))
    c.commit()
    c.close()
    return n_traj, time.perf_counter() - t0


def ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def write_parquet(answer: dict[str, Any], tmp: Path) -> float | None:
    """Steps exported per second, or None when the export module is not there."""
    try:
        from steplake.batches.export import rows_from_batch, write_export
    except ImportError:
        return None
    target = tmp / "batch.parquet"
    t0 = time.perf_counter()
    manifest = write_export(rows_from_batch(answer), target, "parquet", overwrite=True)
    dt = time.perf_counter() - t0
    n = getattr(getattr(manifest, "counts", None), "steps", None)
    if n is None:
        n = sum(len(t["steps"]) for g in answer["groups"] for t in g["trajectories"])
    return float(n) / dt


def warm_up(tmp: Path) -> None:
    """Import torch and pyarrow (and the export code) before anything is timed."""
    groups = [{"group_id": "w", "trajectories": [{"trajectory_id": "w", "reward": 1.0, "advantage": 0.0, "steps": [
        {"step_id": "w", "trajectory_id": "w", "step_index": 0, "prompt_ids": [1, 2], "response_ids": [3],
         "response_logprobs": [-0.1]}]}]}]
    tensorize(groups, backend="torch")
    try:
        write_parquet({"groups": groups}, tmp)
    except Exception as e:  # noqa: BLE001 - the warm-up row may lack export fields; timing runs report it
        console.print(f"  (export warm-up: {type(e).__name__}: {e})")


def bench_recipe(store: SqliteStore, recipe: str, groups: int, reps: int, tmp: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {}
    answer: dict[str, Any] = {}
    for _ in range(reps):
        req = BatchIn(groups=groups, recipe=recipe, lease_seconds=3600)
        t_sel, sel = ms(lambda req=req: store.select_batch(req))
        t_ans, answer = ms(lambda req=req, sel=sel: build_batch_answer(store, req, sel))
        times.setdefault("select", []).append(t_sel)
        times.setdefault("answer", []).append(t_sel + t_ans)
        plain = [{**g, "trajectories": [{**t, "advantage": None} for t in g["trajectories"]]}
                 for g in answer["groups"]]
        times.setdefault("recipe_ms", []).append(ms(lambda p=plain: apply_recipe(recipe, p))[0])
        times.setdefault("json", []).append(ms(lambda a=answer: orjson.dumps(a))[0])
        for mode in ("padded", "packed"):
            for backend in ("numpy", "torch"):
                dt, _ = ms(lambda a=answer, m=mode, b=backend: tensorize(a, mode=m, backend=b))
                times.setdefault(f"{mode}/{backend}", []).append(dt)
    n_groups = len(answer["groups"])
    rows = sum(len(t["steps"]) for g in answer["groups"] for t in g["trajectories"])
    tokens = sum(len(s["prompt_ids"]) + len(s["response_ids"])
                 for g in answer["groups"] for t in g["trajectories"] for s in t["steps"])
    return {"recipe": recipe, "groups": n_groups, "rows": rows, "tokens": tokens, "pairs": len(answer.get("pairs") or []),
            **{k: statistics.median(v) for k, v in times.items()}, "parquet": write_parquet(answer, tmp)}


def table(results: list[dict[str, Any]], pool_steps: int, groups: int) -> Table:
    t = Table(title=f"steplake batches: {groups} groups × {GROUP_SIZE} × {STEPS_PER_TRAJ} steps from a "
                    f"{pool_steps:,}-step pool ({os.cpu_count()} cores); medians, ms")
    for col in ("recipe", "groups", "rows", "tokens", "select", "select+answer", "recipe", "json", "padded np", "padded torch",
                "packed np", "packed torch", "parquet rows/s"):
        t.add_column(col, justify="left" if col == "recipe" else "right")
    for r in results:
        verdict = ""
        if r["recipe"] == "grpo":
            verdict = " [green]≤ 300 ✓[/]" if r["answer"] <= 300 else " [red]> 300 target[/]"
        extra = f" ({r['pairs']} pairs)" if r["recipe"] == "dpo" else ""
        t.add_row(r["recipe"] + extra, str(r["groups"]), f"{r['rows']:,}", f"{r['tokens']:,}", f"{r['select']:.0f}",
                  f"{r['answer']:.0f}{verdict}", f"{r['recipe_ms']:.1f}", f"{r['json']:.0f}",
                  *(f"{r[k]:.0f}" for k in ("padded/numpy", "padded/torch", "packed/numpy", "packed/torch")),
                  "n/a (no export module)" if r["parquet"] is None else f"{r['parquet']:,.0f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool-steps", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here (bench/compare.py)")
    ap.add_argument("--pool", type=Path, default=None,
                    help="keep the pool in this SQLite file and reuse it when it exists (its leases stay taken)")
    a = ap.parse_args()
    recipes = [r for r in a.recipes.split(",") if r]
    need = a.groups * a.reps * len(recipes) * GROUP_SIZE * STEPS_PER_TRAJ
    if need > a.pool_steps:
        raise SystemExit(f"--pool-steps {a.pool_steps} holds too few groups for {a.reps} leased batches of "
                         f"{a.groups} groups per recipe (need {need:,} steps)")
    tmp = Path(tempfile.mkdtemp(prefix="steplake-bench-batches-"))
    try:
        console.print(f"[bold]steplake batch benchmark[/], tmp {tmp}")
        pool = a.pool or tmp / "pool.db"
        if pool.exists():
            console.print(f"  pool: reusing {pool}")
        else:
            n_traj, dt = build_pool(pool, a.pool_steps)
            console.print(f"  pool: {n_traj * STEPS_PER_TRAJ:,} steps / {n_traj:,} trajectories built in {dt:.0f} s")
        warm_up(tmp)
        store = SqliteStore(pool)
        store.open()
        results = []
        try:
            req = BatchIn(groups=a.groups, recipe="grpo", dry_run=True)  # untimed: warms SQLite's page cache
            build_batch_answer(store, req, store.select_batch(req))
            for recipe in recipes:
                results.append(bench_recipe(store, recipe, a.groups, a.reps, tmp))
                console.print(f"  {recipe}: done")
        finally:
            store.close()
        console.print(table(results, a.pool_steps, a.groups))
        if a.json:
            a.json.write_bytes(orjson.dumps({"bench": "batches", "results": results}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
