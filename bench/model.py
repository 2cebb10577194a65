"""Embedded model throughput: serial decoding (one request at a time, the old path) against batched decode
steps (the scheduler), in one run on one loaded model.

    python bench/model.py                          # 1, 4 and 8 concurrent requests, 64 tokens each
    python bench/model.py --max-tokens 32 --threads 1 --json /tmp/model.json

``LocalModel`` is loaded once in this process; ``max_batch`` switches between the serial path
(``max_batch=1``: the caller's thread decodes behind the generation lock, as before the scheduler) and
the scheduler (``max_batch=8``). Each of ``c`` concurrent requests is a thread calling ``generate`` on
its own chat prompt (8 different user messages, 30-45 prompt tokens) with seeded sampling (temperature
1, seed = request index, ``max_tokens``), so both modes produce the same ids (checked: the ``same ids``
column). For each concurrency the two modes alternate; single-request latency (c = 1) is the median of
``--reps`` (5) runs, the other rows one burst each (``--bursts`` to repeat; medians). Aggregate tokens/s
= completion tokens of the burst / its wall time (prefill included); latency = from submit to the last
token, median over the burst's requests. Shared, noisy machines: compare the ratio column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

console = Console(width=160)

QUESTIONS = [
    "Tell me a short story about a dragon and a knight.",
    "What is the capital of France, and why is it famous?",
    "Explain how a rainbow forms.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "What is 37 times 3? Show your steps.",
    "Why is the sky blue?",
    "Describe your favourite breakfast.",
]
MODES = {"serial": 1, "batched": 8}


def burst(model: Any, jobs: list[tuple[list[int], Any]]) -> tuple[float, list[float], list[list[int]]]:
    """Run the jobs concurrently (a thread each): (wall seconds, per-request latencies, ids)."""
    lat = [0.0] * len(jobs)
    ids: list[list[int]] = [[] for _ in jobs]
    start = time.perf_counter()

    def one(i: int) -> None:
        gen = model.generate(*jobs[i])
        lat[i] = time.perf_counter() - start
        ids[i] = gen.token_ids

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, lat, ids


def measure(model: Any, jobs: list[tuple[list[int], Any]], mode: str, runs: int) -> dict[str, Any]:
    model.max_batch = MODES[mode]
    walls, tps, lats, all_ids = [], [], [], []
    for _ in range(runs):
        wall, lat, ids = burst(model, jobs)
        walls.append(wall)
        tps.append(sum(len(x) for x in ids) / wall)
        lats.append(statistics.median(lat))
        all_ids.append(ids)
    return {"mode": mode, "concurrency": len(jobs), "runs": runs, "tokens": sum(len(x) for x in all_ids[0]),
            "tokens_per_s": statistics.median(tps), "latency_s": statistics.median(lats),
            "wall_s": statistics.median(walls), "ids": all_ids[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,4,8", help="comma-separated request counts")
    ap.add_argument("--reps", type=int, default=5, help="runs of the single request (median)")
    ap.add_argument("--bursts", type=int, default=1, help="runs of each concurrent burst (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from steplake.model import LocalModel, SamplingParams

    model = LocalModel(num_threads=a.threads)
    t0 = time.perf_counter()
    model.load()
    console.print(f"[bold]embedded model benchmark[/]: loaded in {time.perf_counter() - t0:.0f} s, "
                  f"torch threads {torch.get_num_threads()}, max_tokens {a.max_tokens}, cpus {os.cpu_count()}")
    prompts = [model.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    model.generate(prompts[0], SamplingParams(max_tokens=4))  # warm-up
    rows: list[dict[str, Any]] = []
    for c in (int(x) for x in a.concurrency.split(",")):
        jobs = [(prompts[i % len(prompts)], SamplingParams(max_tokens=a.max_tokens, temperature=1.0, seed=i))
                for i in range(c)]
        runs = a.reps if c == 1 else a.bursts
        pair = [measure(model, jobs, mode, runs) for mode in MODES]
        for r in pair:
            r["same_ids"] = r["ids"] == pair[0]["ids"]
            r["speedup"] = r["tokens_per_s"] / pair[0]["tokens_per_s"]
            r["latency_ratio"] = r["latency_s"] / pair[0]["latency_s"]
            rows.append(r)
            console.print(f"  c={c} {r['mode']}: {r['tokens_per_s']:.1f} tok/s, latency {r['latency_s']:.2f} s")
    show(rows)
    if a.json:
        a.json.write_bytes(orjson.dumps([{k: v for k, v in r.items() if k != "ids"} for r in rows],
                                        option=orjson.OPT_INDENT_2))


def show(rows: list[dict[str, Any]]) -> None:
    t = Table(title="embedded model: serial (old) vs batched decode steps (new)")
    cols = ("concurrent", "mode", "runs", "tokens", "aggregate tok/s", "× serial", "latency s (median)",
            "latency × serial", "same ids")
    for col in cols:
        t.add_column(col, justify="right" if col not in ("mode",) else "left")
    lines = []
    for r in rows:
        cells = (str(r["concurrency"]), r["mode"], str(r["runs"]), str(r["tokens"]), f"{r['tokens_per_s']:.1f}",
                 f"{r['speedup']:.2f}", f"{r['latency_s']:.2f}", f"{r['latency_ratio']:.2f}",
                 "yes" if r["same_ids"] else "NO")
        t.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(t)
    print("\n| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
