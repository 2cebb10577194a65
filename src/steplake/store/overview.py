"""The dashboard overview's aggregates, computed once for every backend: steps over time, the reward
histogram, policy versions, the funnel and the channels (``Store.read_overview``).

A backend supplies an :class:`OverviewSource` on one connection (``store/sqlite_overview.py``,
``store/postgres_overview.py``): the dialect's bucket expression, a query runner (``?`` placeholders) and a
batch probe of the step sequence. Everything else (the SQL, the search, the answer) is here, so both
backends answer the same JSON for the same pool, never a sample (``sampled`` is always false).

Bounded on a large pool: the time series finds its bucket edges by a safeguarded interpolation search on the step
sequence (which grows with ``created_at``; the edges are searched together, one probe batch per round) and reads at most the
newest ``EXACT_ROWS`` steps, bucket by bucket between its edges (a seq range read through the primary key; no
``created_at``, which SQLite keeps after a step's wide token and document columns); older buckets are counted
from the sequence (``estimated``); the histogram and the
version counts read the most recent ``SAMPLE`` trajectories; the funnel reads the ``funnel_*`` counters that
triggers on ``trajectories`` and ``groups`` keep (store/funnel_sql.py); channels skip through the ``(channel, seq)`` index.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Protocol

from ..types import Json
from .funnel_sql import FUNNEL, PREFIX, READ_SQL, sum_slots

Row = tuple[Any, ...]
SAMPLE = 5000
EXACT_ROWS = 25_000
RANGE_MIN_STEPS = 16  # exact buckets are read range by range while they average this many steps (else one pass)
BINS = 20
MAX_CHANNELS = 100

_SERIES_AGG = "count(*), sum(CASE WHEN continuity = 'fork' THEN 1 ELSE 0 END), sum(prompt_len + response_len)"
_SERIES_SQL = f"SELECT {{bucket}} AS b, {_SERIES_AGG} FROM steps WHERE seq >= ? AND created_at >= ? GROUP BY 1"
_REWARDS_SQL = ("SELECT reward FROM (SELECT reward, seq FROM trajectories ORDER BY seq DESC LIMIT ?) AS recent"
                " WHERE reward IS NOT NULL ORDER BY seq DESC")
_VERSIONS_SQL = ("SELECT max_policy, count(*), count(reward), sum(reward), sum(reward * reward) FROM (SELECT max_policy,"
                 " reward FROM trajectories ORDER BY seq DESC LIMIT ?) AS recent WHERE max_policy IS NOT NULL"
                 " GROUP BY max_policy")


class OverviewSource(Protocol):
    """One backend connection, as the overview needs it."""

    bucket_sql: str  # SQL of the bucket number of a step: floor(created_at / ?), one '?' for the bucket

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Run ``sql`` (``?`` placeholders) and return every row."""
        ...

    def first_steps(self, mids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """For each ``mid``: ``(seq, created_at)`` of the first step with ``seq >= mid`` (absent when none)."""
        ...

    def range_rows(self, select: str, ranges: Sequence[tuple[int, int]]) -> list[Row]:
        """For each ``(lo, hi)`` in order: the row of ``SELECT {select} FROM steps WHERE seq >= lo AND seq < hi``."""
        ...


def compute_overview(src: OverviewSource, policy_version: int, window: float, bucket: float, now: float) -> Json:
    """Everything the overview charts show, except the live counters of ``/api/v1/stats``."""
    since = now - window
    rewards = [float(r) for (r,) in src.rows(_REWARDS_SQL, (SAMPLE,))]
    versions = {int(v): (int(n), int(k), float(r or 0.0), float(r2 or 0.0))
                for v, n, k, r, r2 in src.rows(_VERSIONS_SQL, (SAMPLE,))}
    return {
        "generated_at": now, "sampled": False,
        "series": fill_series(step_series(src, since, now, bucket), since, now, bucket),
        "rewards": reward_histogram(rewards),
        "policy": policy_summary(versions, policy_version),
        "funnel": funnel(src), "channels": channels(src),
    }


def seq_bounds(src: OverviewSource) -> tuple[int, int] | None:
    lo = src.rows("SELECT min(seq) FROM steps")[0][0]  # two queries: each is one b-tree probe
    hi = src.rows("SELECT max(seq) FROM steps")[0][0]
    return None if lo is None else (int(lo), int(hi))


def seq_edges(src: OverviewSource, times: Sequence[float], lo: int, hi: int) -> list[int]:
    """For each ``t`` of ``times`` (ascending): the first seq position in [lo, hi + 1] from which every step has
    ``created_at >= t`` (created_at grows with seq). The searches run together, one probe batch per round.
    Each round probes, per search, the interpolation guess (steps arrive at a fairly steady rate, so a guess from
    the bracket's two creation times lands close) and the bracket's middle (so the bracket at least halves: never
    more rounds than a binary search)."""
    ends = src.first_steps([lo, hi])
    first, last = ends.get(lo), ends.get(hi)
    if first is None or last is None:
        return [hi + 1] * len(times)
    out = [lo] * len(times)
    # i -> [a, b, ta, tb]: the edge is in [a, b]; ta < t is the creation time of a step before a, tb >= t that
    # of the first step at or after b
    state: dict[int, list[Any]] = {}
    for i, t in enumerate(times):
        if first[1] >= t:
            out[i] = lo
        elif last[1] < t:
            out[i] = hi + 1
        else:
            state[i] = [first[0] + 1, hi, first[1], last[1]]
    while state:
        probes: dict[int, tuple[int, ...]] = {}
        for i, (a, b, ta, tb) in state.items():
            guess = a + int((times[i] - ta) / (tb - ta) * (b - a)) if tb > ta else a
            probes[i] = tuple({min(max(guess, a), b - 1), (a + b) // 2})
        found = src.first_steps(sorted({m for ms in probes.values() for m in ms}))
        for i, ms in probes.items():
            a, b, ta, tb = state[i]
            for mid in ms:
                row = found.get(mid)
                if row is None or row[1] >= times[i]:  # no step in [mid, row) exists: the edge is at most mid
                    if mid < b:
                        b, tb = mid, (row[1] if row is not None else tb)
                elif row[0] + 1 > a:
                    a, ta = row[0] + 1, row[1]
            if a >= b:
                del state[i]
                out[i] = min(a, b)
            else:
                state[i] = [a, b, ta, tb]
    return list(itertools.accumulate(out, max))  # never decreasing, even if created_at went back in time


def first_seq_since(src: OverviewSource, since: float) -> int | None:
    """A seq at or before the first step created at ``since`` or later (None when there is none)."""
    bounds = seq_bounds(src)
    if bounds is None:
        return None
    first = seq_edges(src, [since], *bounds)[0]
    return None if first > bounds[1] else first


def step_series(src: OverviewSource, since: float, now: float, bucket: float) -> dict[int, list[int | None]]:
    """Steps per bucket. The newest ``EXACT_ROWS`` steps are counted row by row (with forks and tokens), each
    bucket between its seq edges when the buckets hold ``RANGE_MIN_STEPS`` steps on average (an aggregate over a
    primary-key range, which reads no ``created_at``), else in one pass grouped by ``created_at`` (many small
    buckets); older buckets of a busy window are counted from the step sequence (an estimate that ignores deleted
    steps)."""
    bounds = seq_bounds(src)
    if bounds is None:
        return {}
    first_b, last_b = int(since // bucket), int(now // bucket)
    edges = seq_edges(src, [max(since, b * bucket) for b in range(first_b, last_b + 2)], *bounds)
    out: dict[int, list[int | None]] = {}
    exact_from, total = len(edges) - 1, 0
    while exact_from > 0 and total + edges[exact_from] - edges[exact_from - 1] <= EXACT_ROWS:
        total += edges[exact_from] - edges[exact_from - 1]
        exact_from -= 1
    for i in range(exact_from):
        if edges[i + 1] > edges[i]:
            out[first_b + i] = [edges[i + 1] - edges[i], None, None]
    spans = [(first_b + i, edges[i], edges[i + 1]) for i in range(exact_from, len(edges) - 1) if edges[i + 1] > edges[i]]
    if len(spans) * RANGE_MIN_STEPS <= edges[-1] - edges[exact_from]:
        rows = src.range_rows(_SERIES_AGG, [(lo, hi) for _, lo, hi in spans]) if spans else []
        for (b, _, _), (n, forks, tokens) in zip(spans, rows, strict=True):
            if n:
                out[b] = [int(n), int(forks or 0), int(tokens or 0)]
        return out
    t0 = max(since, (first_b + exact_from) * bucket)
    for b, n, forks, tokens in src.rows(_SERIES_SQL.format(bucket=src.bucket_sql), (bucket, edges[exact_from], t0)):
        out[int(b)] = [int(n), int(forks or 0), int(tokens or 0)]
    return out


def channels(src: OverviewSource, limit: int = MAX_CHANNELS) -> list[str]:
    """Distinct channels by skipping through the (channel, seq) index: one probe per channel."""
    out: list[str] = []
    row = src.rows("SELECT min(channel) FROM trajectories")[0]
    while row[0] is not None and len(out) < limit:
        out.append(str(row[0]))
        row = src.rows("SELECT min(channel) FROM trajectories WHERE channel > ?", (row[0],))[0]
    return out


def funnel(src: OverviewSource) -> Json:
    counts = sum_slots(src.rows(READ_SQL))  # kept by triggers (funnel_sql.py): bare rows plus PostgreSQL's slots
    total, complete, abandoned, rewarded, curated, untrainable = (counts.get(PREFIX + n, 0) for n, _ in FUNNEL)
    consumed = counts.get(PREFIX + "group_consumed", 0)  # complete trajectories of the groups in each status
    leased = counts.get(PREFIX + "group_leased", 0)
    ready = counts.get(PREFIX + "group_ready", 0) + leased + consumed
    return {"stages": [
        {"name": "collected", "count": total},
        {"name": "complete", "count": complete},
        {"name": "rewarded", "count": rewarded},
        {"name": "curated", "count": curated},
        {"name": "ready", "count": ready},
        {"name": "leased", "count": leased},
        {"name": "consumed", "count": consumed},
    ], "abandoned": abandoned, "untrainable": untrainable, "unit": "trajectories"}


def fill_series(series: dict[int, list[int | None]], since: float, now: float, bucket: float) -> Json:
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


def reward_stats(n: int, total: float, squares: float) -> Json:
    """Mean, standard deviation (population) and standard error of ``n`` rewards from their sum and sum of squares."""
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "se": None}
    mean = total / n
    std = math.sqrt(max(0.0, squares / n - mean * mean))
    return {"n": n, "mean": mean, "std": std, "se": std / math.sqrt(n - 1) if n > 1 else None}


def policy_summary(versions: dict[int, tuple[int, int, float, float]], current: int) -> Json:
    """Per policy version (the newest version among a trajectory's steps) of the recent ``SAMPLE`` trajectories:
    how many, how stale, and their reward (mean ± std, standard error) — the reward curve of a training loop."""
    rows = sorted(versions.items(), reverse=True)
    return {"current": current, "sample": SAMPLE,
            "versions": [{"version": v, "trajectories": n, "staleness": current - v, "reward": reward_stats(k, r, r2)}
                         for v, (n, k, r, r2) in rows]}


__all__ = ["OverviewSource", "compute_overview", "first_seq_since", "reward_histogram", "policy_summary",
           "reward_stats", "SAMPLE", "EXACT_ROWS"]
