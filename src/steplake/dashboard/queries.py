"""Aggregates for the dashboard's overview: steps over time, reward histogram, policy versions, the funnel.

Every function is synchronous (run it in a worker thread) and bounded on a large pool: the time series finds
its bucket edges by binary search on the step sequence (which grows with ``created_at``) and reads at most the
newest ``EXACT_ROWS`` steps (older buckets are counted from the sequence),
histograms and version counts read the most recent ``SAMPLE`` trajectories, and the funnel reads the
``groups`` table plus one pass of counters over ``trajectories``. SQLite stores get SQL; any other Store
is answered through the Store protocol from pages of recent records (``sampled: true``).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import Counter
from typing import Any

from ..store.base import Json, Store

SAMPLE = 5000
EXACT_ROWS = 25_000
BINS = 20


def overview(store: Store, policy_version: int, window: float, bucket: float, now: float | None = None) -> Json:
    """Everything the overview charts show, except the live counters of ``/api/v1/stats``."""
    now = time.time() if now is None else now
    reader = getattr(store, "_reader", None)
    if callable(reader):
        conn: sqlite3.Connection = reader()
        series = _sqlite_series(conn, now - window, now, bucket)
        rewards = [r for (r,) in conn.execute(
            "SELECT reward FROM (SELECT reward FROM trajectories ORDER BY seq DESC LIMIT ?) WHERE reward IS NOT NULL",
            (SAMPLE,))]
        versions = dict(conn.execute(
            "SELECT max_policy, count(*) FROM (SELECT max_policy FROM trajectories ORDER BY seq DESC LIMIT ?)"
            " WHERE max_policy IS NOT NULL GROUP BY max_policy", (SAMPLE,)).fetchall())
        funnel = _sqlite_funnel(conn)
        channels = _sqlite_channels(conn)
        sampled = False
    else:
        series, rewards, versions, funnel, channels = _generic(store, now - window, bucket)
        sampled = True
    return {
        "generated_at": now, "sampled": sampled,
        "series": _fill_series(series, now - window, now, bucket),
        "rewards": reward_histogram(rewards),
        "policy": policy_summary(versions, policy_version),
        "funnel": funnel, "channels": channels,
    }


def _seq_bounds(conn: sqlite3.Connection) -> tuple[int, int] | None:
    lo = conn.execute("SELECT min(seq) FROM steps").fetchone()[0]  # two queries: each is one b-tree probe
    hi = conn.execute("SELECT max(seq) FROM steps").fetchone()[0]
    return None if lo is None else (int(lo), int(hi))


def _seq_at(conn: sqlite3.Connection, t: float, lo: int, hi: int) -> int:
    """The first seq in [lo, hi] whose step has ``created_at >= t`` (created_at grows with seq); hi + 1 if none."""
    first = conn.execute("SELECT created_at FROM steps WHERE seq >= ? ORDER BY seq LIMIT 1", (lo,)).fetchone()
    if first is None or first[0] >= t:  # common: every step of the window is newer than t
        return lo if first is not None else hi + 1
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT seq, created_at FROM steps WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= t:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return lo


def _first_seq_since(conn: sqlite3.Connection, since: float) -> int | None:
    bounds = _seq_bounds(conn)
    if bounds is None:
        return None
    first = _seq_at(conn, since, *bounds)
    return None if first > bounds[1] else first


def _sqlite_series(conn: sqlite3.Connection, since: float, now: float, bucket: float) -> dict[int, list[int | None]]:
    """Steps per bucket. The newest ``EXACT_ROWS`` steps are counted row by row (with forks and tokens); older
    buckets of a busy window are counted from the step sequence (an estimate that ignores deleted steps)."""
    bounds = _seq_bounds(conn)
    if bounds is None:
        return {}
    first_b, last_b = int(since // bucket), int(now // bucket)
    edges: list[int] = []
    lo = bounds[0]
    for b in range(first_b, last_b + 2):
        lo = _seq_at(conn, max(since, b * bucket), lo, bounds[1])
        edges.append(lo)
    out: dict[int, list[int | None]] = {}
    exact_from, total = len(edges) - 1, 0
    while exact_from > 0 and total + edges[exact_from] - edges[exact_from - 1] <= EXACT_ROWS:
        total += edges[exact_from] - edges[exact_from - 1]
        exact_from -= 1
    for i in range(exact_from):
        if edges[i + 1] > edges[i]:
            out[first_b + i] = [edges[i + 1] - edges[i], None, None]
    t0 = max(since, (first_b + exact_from) * bucket)
    rows = conn.execute(
        "SELECT CAST(created_at / ? AS INTEGER) AS b, count(*), sum(continuity = 'fork'), sum(prompt_len + response_len)"
        " FROM steps WHERE seq >= ? AND created_at >= ? GROUP BY b", (bucket, edges[exact_from], t0)).fetchall()
    for b, n, f, tok in rows:
        out[int(b)] = [int(n), int(f or 0), int(tok or 0)]
    return out


def _sqlite_channels(conn: sqlite3.Connection, limit: int = 100) -> list[str]:
    """Distinct channels by skipping through the (channel, seq) index: one probe per channel."""
    out: list[str] = []
    row = conn.execute("SELECT min(channel) FROM trajectories").fetchone()
    while row is not None and row[0] is not None and len(out) < limit:
        out.append(str(row[0]))
        row = conn.execute("SELECT min(channel) FROM trajectories WHERE channel > ?", (row[0],)).fetchone()
    return out


def _sqlite_funnel(conn: sqlite3.Connection) -> Json:
    row = conn.execute(
        "SELECT count(*), sum(status = 'complete'), sum(status = 'abandoned'), sum(status = 'complete' AND reward"
        " IS NOT NULL), sum(quality != 'unreviewed' OR curated_at IS NOT NULL), sum(trainable = 0)"
        " FROM trajectories").fetchone()
    by_group = dict(conn.execute("SELECT status, sum(n_complete) FROM groups GROUP BY status").fetchall())
    return _funnel(row, by_group)


def _funnel(row: Any, by_group: dict[str, Any]) -> Json:
    total, complete, abandoned, rewarded, curated, untrainable = (int(v or 0) for v in row)
    consumed = int(by_group.get("consumed") or 0)
    leased = int(by_group.get("leased") or 0)
    ready = int(by_group.get("ready") or 0) + leased + consumed
    return {"stages": [
        {"name": "collected", "count": total},
        {"name": "complete", "count": complete},
        {"name": "rewarded", "count": rewarded},
        {"name": "curated", "count": curated},
        {"name": "ready", "count": ready},
        {"name": "leased", "count": leased},
        {"name": "consumed", "count": consumed},
    ], "abandoned": abandoned, "untrainable": untrainable, "unit": "trajectories"}


def _generic(store: Store, since: float, bucket: float
             ) -> tuple[dict[int, list[int | None]], list[float], dict[int, int], Json, list[str]]:
    series: dict[int, list[int | None]] = {}
    cursor: str | None = None
    for _ in range(20):
        page = store.list_steps({"since": since}, cursor, 1000, with_ids=False)
        for s in page.items:
            b = series.setdefault(int(s["created_at"] // bucket), [0, 0, 0])
            b[0] = int(b[0] or 0) + 1
            b[1] = int(b[1] or 0) + int(s.get("continuity") == "fork")
            b[2] = int(b[2] or 0) + int(s.get("prompt_len") or 0) + int(s.get("response_len") or 0)
        cursor = page.next_cursor
        if cursor is None:
            break
    trajs: list[Json] = []
    cursor = None
    while len(trajs) < SAMPLE:
        page = store.list_trajectories({}, cursor, 1000)
        trajs += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    rewards = [t["reward"] for t in trajs if t.get("reward") is not None]
    versions = Counter(int(t["policy_versions"][-1]) for t in trajs if t.get("policy_versions"))
    stats = store.stats()
    tr = stats.get("trajectories", {})
    row = (sum(tr.values()), tr.get("complete", 0), tr.get("abandoned", 0),
           sum(1 for t in trajs if t["status"] == "complete" and t.get("reward") is not None),
           sum(1 for t in trajs if (t.get("curation") or {}).get("updated_at")),
           sum(1 for t in trajs if not (t.get("curation") or {}).get("trainable", True)))
    funnel = _funnel(row, {})
    channels = sorted({str(t["channel"]) for t in trajs})
    return series, rewards, dict(versions), funnel, channels


def _fill_series(series: dict[int, list[int | None]], since: float, now: float, bucket: float) -> Json:
    first, last = int(since // bucket), int(now // bucket)
    points = []
    for b in range(first, last + 1):
        n, forks, tokens = series.get(b, [0, 0, 0])
        points.append({"t": b * bucket, "steps": n, "forks": forks, "tokens": tokens, "estimated": forks is None})
    return {"bucket_seconds": bucket, "points": points, "per_minute": 60.0 / bucket}


def reward_histogram(rewards: list[float], bins: int = BINS) -> Json:
    vals = [float(r) for r in rewards if r is not None and math.isfinite(float(r))]
    if not vals:
        return {"n": 0, "mean": None, "min": None, "max": None, "bins": []}
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return {"n": len(vals), "mean": lo, "min": lo, "max": hi, "bins": [{"lo": lo, "hi": hi, "count": len(vals)}]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"n": len(vals), "mean": sum(vals) / len(vals), "min": lo, "max": hi,
            "bins": [{"lo": lo + i * width, "hi": lo + (i + 1) * width, "count": c} for i, c in enumerate(counts)]}


def policy_summary(versions: dict[Any, int], current: int) -> Json:
    rows = sorted(((int(v), int(n)) for v, n in versions.items() if v is not None), reverse=True)
    return {"current": current, "sample": SAMPLE,
            "versions": [{"version": v, "trajectories": n, "staleness": current - v} for v, n in rows]}


__all__ = ["overview", "reward_histogram", "policy_summary", "SAMPLE"]
