"""API keys shared by both stores: the row shape and the session binding.

A key may be *bound to a session*: ``binding = {trajectory_id, group_id?, channel?, metadata?}``. Every
gateway call made with such a key that names no trajectory by path or header lands in that trajectory.
Bound keys always have scope ``agent`` and do not count as "keys configured" (``has_keys``): minting
one on an open, loopback-only server keeps it open. Stored as a JSON document (orjson bytes), NULL when
the key is not bound.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from ..errors import ValidationError
from ..records import ID_RE
from .base import Json, KeyRecord
from .codec import dumps, loads

KEY_COLUMNS = "key_id, scope, name, created_at, revoked_at, last_used_at, binding"
BINDING_FIELDS = ("trajectory_id", "group_id", "channel", "metadata")
BOUND_SCOPE = "agent"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")


def hash_secret(secret: str) -> str:
    """What a store keeps of a key's secret (and looks a presented secret up by)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_record(row: Sequence[Any]) -> KeyRecord:
    """A ``KeyRecord`` from a row selected as ``KEY_COLUMNS``."""
    binding = loads(row[6]) if row[6] is not None else None
    return KeyRecord(row[0], row[1], row[2], row[3], row[4], row[5],
                     binding if isinstance(binding, dict) else None)


def check_binding(scope: str, binding: Json | None) -> Json | None:
    """The binding as stored (absent fields left out, empty metadata dropped); raises ``ValidationError``
    (422) for a malformed binding or a scope other than ``agent``."""
    if binding is None:
        return None
    if scope != BOUND_SCOPE:
        raise ValidationError(f"a key bound to a session must have scope {BOUND_SCOPE!r}, not {scope!r}",
                              code="binding_scope")
    if not isinstance(binding, dict):
        raise ValidationError("a key binding must be an object", code="invalid_binding")
    unknown = sorted(set(binding) - set(BINDING_FIELDS))
    if unknown:
        raise ValidationError(f"unknown key binding fields: {', '.join(unknown)}", code="invalid_binding")
    out: Json = {}
    for f in ("trajectory_id", "group_id"):
        v = binding.get(f)
        if v is None and f == "group_id":
            continue
        if not isinstance(v, str) or not ID_RE.fullmatch(v):
            raise ValidationError(f"binding {f} {v!r} is not a valid id (1-128 chars: letters, digits, . _ : -)",
                                  code="invalid_binding")
        out[f] = v
    ch = binding.get("channel")
    if ch is not None:
        if not isinstance(ch, str) or not _NAME_RE.fullmatch(ch):
            raise ValidationError(f"binding channel {ch!r} is not a valid channel name", code="invalid_binding")
        out["channel"] = ch
    meta = binding.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise ValidationError("binding metadata must be an object", code="invalid_binding")
        if meta:
            out["metadata"] = meta
    return out


def binding_bytes(binding: Json | None) -> bytes | None:
    return dumps(binding) if binding is not None else None


__all__ = ["KEY_COLUMNS", "hash_secret", "key_record", "check_binding", "binding_bytes", "BOUND_SCOPE"]
