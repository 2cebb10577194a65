"""Compare the pool and batch benchmarks of two versions of steplake on this machine, in one run.

    python bench/compare.py --base 8bd5c24 --runs 5 --pool-steps 200000
    python bench/compare.py --base HEAD~3 --db postgresql://... --benches pool

The base revision is unpacked with ``git archive`` into a temporary folder. Each run executes every
benchmark once for the base and once for the working tree, alternating which goes first, with this
tree's benchmark scripts (``--json`` output) and ``PYTHONPATH`` pointing at each version's ``src``. The
table shows the median of the runs per figure, the ratio current/base and whether the current version is
more than ``--tolerance`` (10 %) worse. Shared, noisy machines: compare the ratio, not absolute values.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console()
NUM = re.compile(r"-?\d[\d,]*\.?\d*")
LABELLED = re.compile(r"\b(p50|p95|max) (-?\d[\d,]*\.?\d*)")  # "p50 2.9 ms, p95 3.1 ms" / "p50 40 ms, max 90 ms"
BATCH_FIELDS = ("select", "answer", "recipe_ms", "json", "padded/numpy", "padded/torch", "packed/numpy",
                "packed/torch", "parquet")


def unpack(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def higher_is_better(measure: str, unit: str) -> bool:
    return "/s" in unit or "/s" in measure or "rows/s" in measure


def pool_figures(rows: list[list[str]]) -> dict[str, tuple[float, bool]]:
    out: dict[str, tuple[float, bool]] = {}
    for measure, result, _target, _verdict in rows:
        labelled = LABELLED.findall(result)
        if labelled:  # one figure per label; the label's own digits (p50) are never a figure
            for label, value in labelled:
                out[f"{measure.strip()} {label} ms"] = (float(value.replace(",", "")), False)
            continue
        nums = NUM.findall(result)
        if nums:
            out[measure.strip()] = (float(nums[0].replace(",", "")), higher_is_better(measure, result))
    return out


def batch_figures(results: list[dict[str, Any]]) -> dict[str, tuple[float, bool]]:
    out: dict[str, tuple[float, bool]] = {}
    for r in results:
        for f in BATCH_FIELDS:
            if r.get(f) is not None:
                out[f"batches {r['recipe']}: {f}{' rows/s' if f == 'parquet' else ' ms'}"] = (
                    float(r[f]), f == "parquet")
    return out


def run_bench(tree: Path, bench: str, args: argparse.Namespace, db: str) -> dict[str, tuple[float, bool]]:
    with tempfile.TemporaryDirectory(prefix="steplake-compare-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--json", str(out),
               "--pool-steps", str(args.pool_steps)]
        if bench == "pool":
            cmd += ["--db", db, "--quick"]
        else:
            cmd += ["--reps", str(args.batch_reps)]
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"{bench} on {tree} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        data = orjson.loads(out.read_bytes())
    return pool_figures(data["rows"]) if bench == "pool" else batch_figures(data["results"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--db", action="append", default=None, help="'sqlite' and/or postgresql:// URLs (pool bench)")
    ap.add_argument("--benches", default="pool,batches")
    ap.add_argument("--pool-steps", type=int, default=200_000)
    ap.add_argument("--batch-reps", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.10)
    a = ap.parse_args()
    dbs = a.db or ["sqlite"]
    work = Path(tempfile.mkdtemp(prefix="steplake-base-"))
    base = unpack(a.base, work / "base")
    jobs = [(b, db) for b in a.benches.split(",") for db in (dbs if b == "pool" else ["sqlite"])]
    figures: dict[tuple[str, str], dict[str, list[float]]] = {}
    better: dict[str, bool] = {}
    try:
        for i in range(a.runs):
            order = [("base", base), ("current", ROOT)] if i % 2 == 0 else [("current", ROOT), ("base", base)]
            for bench, db in jobs:
                for label, tree in order:
                    console.print(f"run {i + 1}/{a.runs}: {bench} ({db.split('@')[-1]}) on {label}")
                    for name, (value, hib) in run_bench(tree, bench, a, db).items():
                        key = f"[{db.split('@')[-1] if bench == 'pool' else 'sqlite'}] {name}"
                        figures.setdefault((key, label), {}).setdefault("v", []).append(value)
                        better[key] = hib
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t = Table(title=f"median of {a.runs} runs: {a.base} vs working tree ({os.cpu_count()} cores)")
    for col in ("figure", "base", "current", "current/base", "verdict"):
        t.add_column(col)
    lines = ["| figure | base | current | current/base | verdict |", "| --- | --- | --- | --- | --- |"]
    for key in better:
        b = figures.get((key, "base"), {}).get("v")
        c = figures.get((key, "current"), {}).get("v")
        if not b or not c:
            continue
        mb, mc = statistics.median(b), statistics.median(c)
        ratio = mc / mb if mb else float("inf")
        worse = ratio < 1 - a.tolerance if better[key] else ratio > 1 + a.tolerance
        row = (key, f"{mb:,.2f}", f"{mc:,.2f}", f"{ratio:.2f}", "worse" if worse else "ok")
        t.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(t)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
