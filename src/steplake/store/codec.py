"""Compact binary encodings shared by the stores: token ids as little-endian int32, logprobs as float32."""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache

import orjson

_SWAP = sys.byteorder != "little"


@lru_cache(maxsize=4096)
def _packer(kind: str, n: int) -> struct.Struct:
    return struct.Struct(f"<{n}{kind}")


def ids_to_bytes(ids: Sequence[int]) -> bytes:
    """Little-endian int32 (``struct`` packs a list about 3× faster than ``array``; both check the range)."""
    try:
        return _packer("i", len(ids)).pack(*ids)
    except struct.error as e:
        raise OverflowError(f"token id outside int32: {e}") from None


def bytes_to_ids(b: bytes | memoryview | None) -> list[int]:
    if not b:
        return []
    a = array("i")
    a.frombytes(bytes(b))
    if _SWAP:
        a.byteswap()
    return a.tolist()


def floats_to_bytes(xs: Sequence[float] | None) -> bytes | None:
    if xs is None:
        return None
    try:
        return _packer("f", len(xs)).pack(*xs)
    except OverflowError:  # beyond float32: stored as ±inf, as array("f") would
        a = array("f", xs)
        if _SWAP:
            a.byteswap()
        return a.tobytes()


def bytes_to_floats(b: bytes | memoryview | None) -> list[float] | None:
    if b is None:
        return None
    a = array("f")
    a.frombytes(bytes(b))
    if _SWAP:
        a.byteswap()
    return a.tolist()


def dumps(obj: object) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as e:
        if "Recursion limit" not in str(e):
            raise
        # records are bounded at MAX_JSON_DEPTH when validated; this guards what reaches a store otherwise
        from ..errors import ValidationError

        raise ValidationError("JSON nested too deeply to store (the limit is 64 levels)", code="too_deep") from None


def loads(b: bytes | str | memoryview | None) -> object:
    if b is None:
        return None
    return orjson.loads(bytes(b) if isinstance(b, memoryview) else b)


__all__ = ["ids_to_bytes", "bytes_to_ids", "floats_to_bytes", "bytes_to_floats", "dumps", "loads"]
