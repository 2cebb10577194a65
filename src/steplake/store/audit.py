"""The audit log: who changed the pool as an administrator, what, when and from where (both stores).

One row per action, kept in the pool (table ``audit``) and never pruned:

==========  ====================================================================================================
field       meaning
==========  ====================================================================================================
``id``      increasing integer (the list's cursor: pages run newest first)
``at``      epoch seconds
``actor``   the API key id (a dashboard session: the key id that signed it in); ``anonymous`` on a keyless
            (loopback-only) server; ``cli`` for a command run on the database directly; ``server`` for the
            server's own work (retention)
``via``     ``key`` / ``session`` (dashboard cookie) / ``open`` (keyless server) / ``cli`` / ``server``
``action``  one of :data:`ACTIONS` (``steplake.store.base``, with :func:`audit_entry`)
``target``  what it acted on (a key id, a trajectory id, a policy version, an export id ...), or null
``summary`` an object: what changed (counts, scope, labels ...); never a key's secret
``client``  where from: the client's address over HTTP, ``user@host`` for the CLI, null for the server
==========  ====================================================================================================

Writers: ``steplake.api.audit.AuditMiddleware`` (HTTP actions, after they succeeded), the CLI (``keys create``,
``keys revoke``, ``prune``) and the pool's retention pruner. ``list_audit`` filters by ``action``, ``actor``,
``since`` and ``until``.
"""

from __future__ import annotations

import getpass
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ValidationError
from .base import ACTIONS, VIAS, Json, Page, audit_entry
from .codec import dumps, loads

AUDIT_COLUMNS = "id, at, actor, via, action, target, summary, client"
_INSERT = "INSERT INTO audit(at, actor, via, action, target, summary, client) VALUES ({ph}) RETURNING id"
INT64_MAX = 2**63 - 1


def _values(entry: Json) -> tuple[Any, ...]:
    return (float(entry["at"]), entry["actor"], entry["via"], entry["action"], entry.get("target"),
            dumps(entry.get("summary") or {}), entry.get("client"))


def audit_dict(row: Sequence[Any]) -> Json:
    """An answer item from a row selected as ``AUDIT_COLUMNS``."""
    return {"id": row[0], "at": row[1], "actor": row[2], "via": row[3], "action": row[4], "target": row[5],
            "summary": loads(row[6]) if row[6] is not None else {}, "client": row[7]}


def _cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        n = int(cursor)
    except ValueError:
        n = -1
    if not 0 < n <= INT64_MAX:
        raise ValidationError(f"invalid cursor {cursor!r}", code="invalid_cursor")
    return n


def audit_query(filters: Json, cursor: str | None, limit: int, ph: str) -> tuple[str, list[Any]]:
    """``SELECT`` of one page (newest first) with ``ph`` as the placeholder (``?`` or ``%s``)."""
    where: list[str] = []
    args: list[Any] = []
    for col in ("action", "actor", "via", "target"):
        if filters.get(col) is not None:
            where.append(f"{col} = {ph}")
            args.append(str(filters[col]))
    if filters.get("since") is not None:
        where.append(f"at >= {ph}")
        args.append(float(filters["since"]))
    if filters.get("until") is not None:
        where.append(f"at < {ph}")
        args.append(float(filters["until"]))
    after = _cursor(cursor)
    if after is not None:
        where.append(f"id < {ph}")
        args.append(after)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit + 1)
    return f"{sql} ORDER BY id DESC LIMIT {ph}", args


def audit_page(rows: Sequence[Sequence[Any]], limit: int) -> Page:
    items = [audit_dict(r) for r in rows[:limit]]
    return Page(items, str(items[-1]["id"]) if len(rows) > limit and items else None)


class SqliteAudit:
    """``append_audit`` / ``list_audit`` of SqliteStore (writes on its writer thread)."""

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        raise NotImplementedError

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def append_audit(self, entry: Json) -> Json:
        values = _values(entry)
        sql = _INSERT.format(ph=", ".join("?" * len(values)))
        audit_id = self._write(lambda c: c.execute(sql, values).fetchone()[0])
        return {**entry, "id": int(audit_id)}

    def list_audit(self, filters: Json, cursor: str | None, limit: int) -> Page:
        sql, args = audit_query(filters, cursor, limit, "?")
        return audit_page(self._reader().execute(sql, args).fetchall(), limit)


class PgAudit:
    """``append_audit`` / ``list_audit`` of PostgresStore (an autocommit insert: no events, no locks)."""

    def _all(self, sql: str, args: Any = ()) -> list[Any]:
        raise NotImplementedError

    def _one(self, sql: str, args: Any = ()) -> Any:
        raise NotImplementedError

    def append_audit(self, entry: Json) -> Json:
        values = _values(entry)
        row = self._one(_INSERT.format(ph=", ".join(["%s"] * len(values))), values)
        return {**entry, "id": int(row[0])}

    def list_audit(self, filters: Json, cursor: str | None, limit: int) -> Page:
        sql, args = audit_query(filters, cursor, limit, "%s")
        return audit_page(self._all(sql, args), limit)


def cli_origin() -> str:
    """``user@host`` of the person running a command on the database directly."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        user = "?"
    return f"{user}@{socket.gethostname()}"


def record_cli(store: Any, action: str, target: str | None = None, summary: Json | None = None) -> None:
    """Append an entry for a CLI action on the database directly (actor ``cli``)."""
    store.append_audit(audit_entry(action, actor="cli", via="cli", target=target, summary=summary,
                                   client=cli_origin()))


_AGES = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from epoch seconds, an ISO date or date-time (local time unless it names a zone), or
    an age (``30m``, ``2h``, ``7d``); ``ValueError`` otherwise."""
    import datetime as dt

    text = text.strip()
    if text[-1:] in _AGES and text[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(text[:-1]) * _AGES[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"expected epoch seconds, an ISO date or an age like 2h / 7d, got {text!r}") from None


def format_entry(e: Json) -> str:
    """One line for ``steplake audit``: time, action, actor (via), target, client, summary."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(float(e["at"])).isoformat(timespec="seconds")
    summary = dumps({k: v for k, v in (e.get("summary") or {}).items() if v is not None}).decode()
    return (f"{when}  {e['action']:<18} {e['actor']} ({e['via']})  {e.get('target') or '-'}  "
            f"{e.get('client') or '-'}  {summary}")


__all__ = ["ACTIONS", "VIAS", "AUDIT_COLUMNS", "audit_entry", "audit_dict", "audit_query", "audit_page",
           "SqliteAudit", "PgAudit", "cli_origin", "record_cli", "parse_since", "format_entry"]
