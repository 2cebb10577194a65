"""rules.continuity: the classes of CONTRACT §3 on int32 byte strings."""

from __future__ import annotations

from steplake.records import REALIGN_TOLERANCE
from steplake.rules.continuity import classify, common_prefix_len
from steplake.store.codec import ids_to_bytes

S = list(range(100, 140))


def b(ids: list[int]) -> bytes:
    return ids_to_bytes(ids)


def test_first_clean_realigned_fork() -> None:
    assert classify(None, b(S)) == ("first", 0)
    assert classify(b(S), b(S + [1, 2])) == ("clean", len(S))
    assert classify(b(S), b(S)) == ("clean", len(S))
    cut = S[:-REALIGN_TOLERANCE] + [0]
    assert classify(b(S), b(cut)) == ("realigned", len(S) - REALIGN_TOLERANCE)
    cut = S[:-(REALIGN_TOLERANCE + 1)] + [0]
    assert classify(b(S), b(cut)) == ("fork", len(S) - REALIGN_TOLERANCE - 1)
    assert classify(b(S), b([7])) == ("fork", 0)


def test_common_prefix_len_counts_items_not_bytes() -> None:
    assert common_prefix_len(b([1, 2, 3]), b([1, 2, 4])) == 2
    assert common_prefix_len(b([256]), b([257])) == 0  # first byte differs, same item index
    assert common_prefix_len(b([1 << 24]), b([2 << 24])) == 0  # last byte differs
    assert common_prefix_len(b([]), b([1])) == 0
    assert common_prefix_len(b([5, 6]), b([5, 6, 7])) == 2
