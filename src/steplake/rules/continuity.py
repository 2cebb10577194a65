"""Continuity of consecutive steps (CONTRACT §3).

With ``S = parent.prompt_ids + parent.response_ids`` and ``L`` the common prefix length of ``S`` and the
step's ``prompt_ids``: ``first`` (no parent), ``clean`` (``L == len(S)``), ``realigned``
(``len(S) - L <= 8``), ``fork`` (otherwise). Works on int32 byte strings so the hot path stays in C.
"""

from __future__ import annotations

import numpy as np

from ..records import REALIGN_TOLERANCE


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Common prefix length, in int32 items, of two native int32 byte strings."""
    n = min(len(a), len(b)) // 4
    if n == 0:
        return 0
    if a[: n * 4] == b[: n * 4]:
        return n
    x = np.frombuffer(a, dtype=np.int32, count=n)
    y = np.frombuffer(b, dtype=np.int32, count=n)
    return int(np.argmax(x != y))


def classify(parent_seq: bytes | None, prompt: bytes) -> tuple[str, int]:
    """Return ``(continuity, shared_prefix_len)`` for a prompt against its parent's full sequence."""
    if parent_seq is None:
        return "first", 0
    if prompt.startswith(parent_seq):
        return "clean", len(parent_seq) // 4
    lp = common_prefix_len(parent_seq, prompt)
    if len(parent_seq) // 4 - lp <= REALIGN_TOLERANCE:
        return "realigned", lp
    return "fork", lp


__all__ = ["classify", "common_prefix_len"]
