"""The overview's bucket edges (store/overview.py ``seq_edges``): a safeguarded interpolation search that must
find exactly what a scan finds, whatever the arrival pattern (bursts, pauses, gaps left by deleted steps, equal
times), and in few rounds when steps arrive steadily."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from steplake.store.overview import seq_edges


class ListSource:
    """Steps as sorted (seq, created_at) pairs; counts the probe rounds."""

    bucket_sql = ""

    def __init__(self, steps: list[tuple[int, float]]) -> None:
        self.seqs = [s for s, _ in steps]
        self.times = [t for _, t in steps]
        self.rounds = 0

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        raise AssertionError("not used")

    def first_steps(self, mids: Sequence[int]) -> dict[int, tuple[int, float]]:
        self.rounds += 1
        out = {}
        for m in mids:
            j = bisect.bisect_left(self.seqs, m)
            if j < len(self.seqs):
                out[m] = (self.seqs[j], self.times[j])
        return out


def scan(steps: list[tuple[int, float]], t: float, hi: int) -> int:
    """The first position from which every step has created_at >= t, by brute force."""
    below = [s for s, at in steps if at < t]
    return max(below) + 1 if below else steps[0][0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from([0.0, 0.0, 0.5, 1.0, 7.0, 300.0])), min_size=1,
                max_size=300),
       st.lists(st.floats(-10, 5000, allow_nan=False), min_size=1, max_size=40))
def test_edges_equal_a_scan(gaps_and_pauses: list[tuple[int, float]], probes: list[float]) -> None:
    steps, seq, at = [], 0, 1000.0
    for gap, pause in gaps_and_pauses:
        seq, at = seq + gap, at + pause
        steps.append((seq, at))
    times = sorted(probes)
    lo, hi = steps[0][0], steps[-1][0]
    got = seq_edges(ListSource(steps), times, lo, hi)
    want = [max(lo, min(scan(steps, t, hi), hi + 1)) for t in times]
    assert got == want


def test_a_steady_pool_takes_few_rounds() -> None:
    n = 1_000_000
    steps = [(s, 10_000.0 + s * 0.0864) for s in range(1, n + 1)]  # a million steps over a day
    src = ListSource(steps)
    times = [10_000.0 + 300.0 * k + 7.0 for k in range(288)]
    got = seq_edges(src, times, 1, n)
    created = src.times
    assert got == [bisect.bisect_left(created, x) + 1 for x in times]  # seq = index + 1
    assert src.rounds <= 8, src.rounds  # a plain binary search needs 21
