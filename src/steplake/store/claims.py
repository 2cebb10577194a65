"""Reward claims: across every server sharing a pool, one scores a trajectory with a function version.

Before a background reward run, a server claims ``(trajectory_id, component, version)`` in the
``reward_claims`` table: the ``INSERT ... ON CONFLICT DO NOTHING`` that inserts the row decides who scores.
A run that stored a value marks its claim done (never taken again); one that failed or abstained releases
it (a later catch-up asks again). A claim is never handed out for a value already stored. A claim that is neither done nor released within ``stale_after`` seconds (its server
died mid-run) may be taken over; a server may also take back its own unfinished claims (it was cut off by
a database outage). Both stores run the same statements (``?`` placeholders, ``%s`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

ClaimKey = tuple[str, str, str]  # (trajectory_id, component, version)
Execute = Callable[[str, Sequence[Any]], Any]  # conn.execute: returns a cursor with ``rowcount``

_INSERT = ("INSERT INTO reward_claims(trajectory_id, component, version, claimed_by, claimed_at)"
           " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_RETAKE = ("UPDATE reward_claims SET claimed_by = ?, claimed_at = ? WHERE trajectory_id = ? AND component = ?"
           " AND version = ? AND done_at IS NULL AND (claimed_by = ? OR claimed_at < ?)")
_DONE = ("UPDATE reward_claims SET done_at = ? WHERE trajectory_id = ? AND component = ? AND version = ?"
         " AND claimed_by = ?")
_RELEASE = ("DELETE FROM reward_claims WHERE trajectory_id = ? AND component = ? AND version = ? AND claimed_by = ?"
            " AND done_at IS NULL")
_SCORED = ("SELECT 1 FROM rewards WHERE trajectory_id = ? AND step_id IS NULL AND name = ? AND version = ?"
           " LIMIT 1")
DELETE_FOR_TRAJECTORY = "DELETE FROM reward_claims WHERE trajectory_id = ?"


def _sql(sql: str, placeholder: str) -> str:
    return sql if placeholder == "?" else sql.replace("?", placeholder)


def claim(execute: Execute, placeholder: str, keys: Sequence[ClaimKey], owner: str, stale_after: float,
          now: float) -> list[ClaimKey]:
    """Claim ``keys`` for ``owner``; returns those it now holds (inserted, its own, or stale and taken over).
    A key whose value is stored already (its scorer stopped between storing and settling, or an explicit run
    stored it) is settled done instead of handed out again."""
    insert, retake, scored = _sql(_INSERT, placeholder), _sql(_RETAKE, placeholder), _sql(_SCORED, placeholder)
    won: list[ClaimKey] = []
    for key in dict.fromkeys(keys):
        tid, component, version = key
        inserted = execute(insert, (tid, component, version, owner, now)).rowcount == 1
        if not inserted and execute(retake, (owner, now, tid, component, version, owner, now - stale_after)
                                    ).rowcount != 1:
            continue
        if execute(scored, (tid, component, version)).fetchone() is not None:
            settle(execute, placeholder, [key], owner, True, now)
            continue
        won.append(key)
    return won


def settle(execute: Execute, placeholder: str, keys: Sequence[ClaimKey], owner: str, done: bool,
           now: float) -> None:
    """Mark ``owner``'s claims done (scored: never taken again) or release them (failed: retried later)."""
    if done:
        sql = _sql(_DONE, placeholder)
        for tid, component, version in dict.fromkeys(keys):
            execute(sql, (now, tid, component, version, owner))
    else:
        sql = _sql(_RELEASE, placeholder)
        for tid, component, version in dict.fromkeys(keys):
            execute(sql, (tid, component, version, owner))


__all__ = ["ClaimKey", "claim", "settle", "DELETE_FOR_TRAJECTORY"]
