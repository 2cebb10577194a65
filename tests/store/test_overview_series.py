"""The overview's exact step series (store/overview.py ``step_series``): bucket by bucket between the seq edges
(an aggregate over a primary-key range that reads no ``created_at``) when buckets hold enough steps, else one
grouped pass; both answer what a scan of the rows answers, on every backend, forks and tokens included."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from steplake.records import Step
from steplake.store import overview
from steplake.store.postgres_overview import PgOverviewSource
from steplake.store.sqlite_overview import SqliteOverviewSource

P = list(range(100, 110))


def _pool(store: Any) -> list[tuple[float, bool, int]]:
    """Steps created at 1000 + k (k < 90), a fork every 7th; returns (created_at, fork, tokens) of each."""
    order: list[str] = []
    for t in range(30):
        tid = f"t{t}"
        steps = [Step(step_id=f"{tid}-0", trajectory_id=tid, step_index=0, prompt_ids=P, response_ids=[1, 2]),
                 Step(step_id=f"{tid}-1", trajectory_id=tid, step_index=1, prompt_ids=P + [1, 2, 3], response_ids=[4]),
                 Step(step_id=f"{tid}-2", trajectory_id=tid, step_index=2,
                      prompt_ids=([55] * 20 if t % 7 == 0 else P + [1, 2, 3, 4, 5]), response_ids=[6])]
        store.append_steps(steps)
        order.extend(s.step_id for s in steps if s.step_id)
    at = [(1000.0 + k, sid) for k, sid in enumerate(order)]
    if hasattr(store, "path"):
        raw = sqlite3.connect(store.path)
        with raw:
            raw.executemany("UPDATE steps SET created_at = ? WHERE step_id = ?", at)
            rows = raw.execute("SELECT created_at, continuity = 'fork', prompt_len + response_len FROM steps").fetchall()
        raw.close()
    else:
        with store._conn() as conn:
            conn.cursor().executemany("UPDATE steps SET created_at = %s WHERE step_id = %s", at)
            rows = conn.execute("SELECT created_at, continuity = 'fork', prompt_len + response_len FROM steps").fetchall()
    return [(float(a), bool(f), int(n)) for a, f, n in rows]


def _scan(rows: list[tuple[float, bool, int]], bucket: float, since: float) -> dict[float, list[int]]:
    out: dict[float, list[int]] = {}
    for at, fork, tokens in rows:
        if at >= since:
            p = out.setdefault(at // bucket * bucket, [0, 0, 0])
            p[0], p[1], p[2] = p[0] + 1, p[1] + int(fork), p[2] + tokens
    return out


@pytest.mark.parametrize("min_steps", [0, 10**9])  # bucket by bucket / one grouped pass
def test_exact_series_is_a_scan_either_way(store: Any, monkeypatch: pytest.MonkeyPatch, min_steps: int) -> None:
    rows = _pool(store)
    assert store.delete_trajectory("t4")  # a gap in the sequence
    rows = [r for r in rows if not 1012 <= r[0] < 1015]
    assert sum(f for _, f, _ in rows) == 5
    calls: list[int] = []
    for cls in (SqliteOverviewSource, PgOverviewSource):  # count the range reads
        def counted(self: Any, select: str, ranges: Any, real: Any = cls.range_rows) -> Any:
            calls.append(len(ranges))
            return real(self, select, ranges)

        monkeypatch.setattr(cls, "range_rows", counted)
    monkeypatch.setattr(overview, "RANGE_MIN_STEPS", min_steps)
    for bucket, since in ((30.0, 990.0), (7.0, 1010.0), (1.0, 1080.0)):
        got = store.read_overview(0, window=1100.0 - since, bucket=bucket, now=1100.0)["series"]["points"]
        want = _scan(rows, bucket, since)
        assert {p["t"]: [p["steps"], p["forks"], p["tokens"]] for p in got if p["steps"]} == want
        assert not any(p["estimated"] for p in got)
    assert calls == ([4, 12, 10] if min_steps == 0 else [])  # the non-empty buckets of each window
