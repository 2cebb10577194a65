"""The SQL differences between the two backends, in one small object, so a query is written once.

Queries shared by both stores are written with ``?`` placeholders and passed through :meth:`Dialect.sql`
(``%s`` on PostgreSQL). What else differs: an id list (``IN (?, ?, ...)`` on SQLite, ``= ANY(%s)`` with one
array argument on PostgreSQL), row locks (``FOR UPDATE`` / ``FOR UPDATE SKIP LOCKED``: PostgreSQL only; the
SQLite writer thread is the one writer, so it needs none), and the sequence number of the tables that
have none of their own on SQLite (its implicit ``rowid``; ``seq`` on PostgreSQL). Both dialects share the
upsert syntax (``ON CONFLICT (key) DO ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    name: str
    ph: str  # the driver's placeholder
    id_chunk: int  # ids per IN / ANY list
    rowid: str  # a row's sequence number where SQLite has only its implicit rowid (groups, step_text)
    for_update: str  # appended to a SELECT that reads rows it is about to change
    skip_locked: str  # appended to a SELECT that leases rows another writer may hold

    def sql(self, text: str) -> str:
        """``text`` with this dialect's placeholder for each ``?``."""
        return text if self.ph == "?" else text.replace("?", self.ph)

    def lock_order(self, col: str) -> str:
        """``ORDER BY col`` where rows are locked as they are read (PostgreSQL: every writer locks in one
        order, so two never deadlock); nothing on SQLite."""
        return f" ORDER BY {col}" if self.for_update else ""

    def in_ids(self, col: str, ids: Sequence[Any]) -> tuple[str, list[Any]]:
        """``col`` is one of ``ids``: the clause and its arguments."""
        if self.ph == "?":
            return f"{col} IN ({','.join('?' * len(ids))})", list(ids)
        return f"{col} = ANY({self.ph})", [list(ids)]

    @staticmethod
    def upsert(table: str, cols: Sequence[str], key: str, update: str) -> str:
        """``INSERT`` of one row of ``cols`` that runs ``update`` (``SET`` assignments) when ``key`` exists;
        ``?`` placeholders (pass the result through :meth:`sql`)."""
        marks = ", ".join("?" * len(cols))
        return f"INSERT INTO {table}({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {update}"


SQLITE = Dialect("sqlite", "?", id_chunk=500, rowid="rowid", for_update="", skip_locked="")
POSTGRES = Dialect("postgresql", "%s", id_chunk=1000, rowid="seq", for_update=" FOR UPDATE",
                   skip_locked=" FOR UPDATE SKIP LOCKED")


def where_sql(where: Sequence[str]) -> str:
    """`` WHERE a AND b`` (empty without clauses)."""
    return " WHERE " + " AND ".join(where) if where else ""


def equal_filters(filters: dict[str, Any], cols: Sequence[str], ph: str) -> tuple[list[str], list[Any]]:
    """``col = value`` for each of ``cols`` given (not None) in ``filters``."""
    where: list[str] = []
    args: list[Any] = []
    for col in cols:
        if filters.get(col) is not None:
            where.append(f"{col} = {ph}")
            args.append(filters[col])
    return where, args


__all__ = ["Dialect", "SQLITE", "POSTGRES", "equal_filters", "where_sql"]
