"""Schema upgrades, the same for both stores: the ``meta`` table holds the schema version, ``migrations[i]``
moves a database from version i to i+1 (store/schema.py, store/postgres_schema.py). Runs inside the
caller's transaction, which also holds whatever the backend adds (its lock, its backfills)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import StoreError
from .dialect import Dialect

Execute = Callable[..., Any]  # conn.execute(sql[, args]) of either driver


def upgrade_schema(execute: Execute, migrations: Sequence[str], run: Callable[[str], Any] | None = None) -> int:
    """Run the migration statements the database lacks, one by one (``run``: how one runs, default
    ``execute``); returns the version it had. Record the new one with :func:`record_version`."""
    execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise StoreError(f"database schema v{version} is newer than this steplake (v{len(migrations)})")
    step = run or execute
    for sql in migrations[version:]:
        for stmt in re.split(r";[ \t]*(?:\n|$)", sql):  # a ';' inside a line (a trigger's body) stays
            if stmt.strip():
                step(stmt)
    return version


def record_version(execute: Execute, dialect: Dialect, version: int) -> None:
    execute(dialect.sql(dialect.upsert("meta", ("key", "value"), "key", "value = excluded.value")),
            ("schema_version", str(version)))


__all__ = ["upgrade_schema", "record_version"]
