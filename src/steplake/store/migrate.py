"""``steplake migrate --from sqlite:///pool.db --to postgresql://...``: copy a pool between stores without loss.

Rows are copied verbatim, table by table (token ids stay the same bytes, JSON documents the same orjson
bytes, ids, timestamps, continuity fields, curation state and history, rewards, feedback, batches, policy
versions, API keys as hashes, the audit log, counters and, unless ``events=False``, the event feed), so every read
through the Store API answers the same on both sides. The SQLite file is read directly (one read
transaction: a consistent snapshot even of a live pool; stop its server to copy the final state).

Resumable: each batch is inserted with ``ON CONFLICT DO NOTHING`` and the last copied SQLite rowid of
each table is committed with it in the destination's ``meta`` table, so an interrupted run continues
where it stopped and a repeated run adds nothing twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import ConfigError, StoreError
from .funnel_sql import GROUP_COUNTS, TRAJECTORY_COUNTS, pg_recount
from .postgres import PostgresStore, connect_kwargs, redact
from .postgres_schema import SERIAL_COLUMNS
from .schema import SCHEMA_VERSION

# Copy order (parents first). The SQLite rowid orders and resumes each table.
TABLES = ["groups", "trajectories", "steps", "step_text", "rewards", "curation_history", "feedback", "batches", "policy",
          "keys", "counters", "events", "audit"]
# columns filled from the SQLite rowid (tables whose SQLite key is not an INTEGER PRIMARY KEY)
ROWID_AS = {"groups": "seq", "step_text": "seq"}
# tables whose existing destination rows are overwritten (exact copies of small state)
OVERWRITE = {"counters": "name"}


def sqlite_path(url: str) -> Path:
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    elif url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--from must be a SQLite pool (a file path or sqlite:///path)")
    p = Path(url)
    if not p.is_file():
        raise ConfigError(f"no SQLite pool at {str(p)!r}")
    return p


def _source(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or int(row[0]) != SCHEMA_VERSION:
        raise ConfigError(f"{path} has schema v{row[0] if row else '?'}; open it once with this steplake"
                          f" (v{SCHEMA_VERSION}) before migrating")
    conn.execute("BEGIN")  # one snapshot for the whole copy
    return conn


def _columns(src: sqlite3.Connection, dst: psycopg.Connection[Any], table: str) -> tuple[list[str], list[str]]:
    """(SQLite columns to read, destination columns to write), ``rowid`` first."""
    have = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    want = {r[0] for r in dst.execute("SELECT column_name FROM information_schema.columns"
                                      " WHERE table_schema = current_schema() AND table_name = %s", (table,))}
    cols = [c for c in have if c in want]
    extra = ROWID_AS.get(table)
    return ["rowid", *cols], ([extra] if extra else []) + cols


def _progress_key(table: str) -> str:
    return f"migrate.{table}.rowid"


def _done_rowid(dst: psycopg.Connection[Any], table: str) -> int:
    row = dst.execute("SELECT value FROM meta WHERE key = %s", (_progress_key(table),)).fetchone()
    return int(row[0]) if row else 0


def _check_destination(dst: psycopg.Connection[Any], source_id: str) -> None:
    row = dst.execute("SELECT value FROM meta WHERE key = 'migrate.source'").fetchone()
    if row is not None and row[0] != source_id:
        raise ConfigError(f"the destination already holds a migration of {row[0]!r}; use another database or schema")
    if row is None and dst.execute("SELECT 1 FROM steps LIMIT 1").fetchone() is not None:
        raise ConfigError("the destination already holds steps; migrate into an empty database or schema")
    dst.execute("INSERT INTO meta(key, value) VALUES ('migrate.source', %s) ON CONFLICT (key) DO NOTHING",
                (source_id,))


def _insert_sql(table: str, cols: list[str]) -> tuple[sql.Composed, sql.Composed]:
    ident = sql.Identifier(table)
    tmp = sql.Identifier(f"_migrate_{table}")
    names = sql.SQL(", ").join(map(sql.Identifier, cols))
    tail: sql.Composable
    if table in OVERWRITE:
        key = OVERWRITE[table]
        sets = sql.SQL(", ").join(sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
                                  for c in cols if c != key)
        tail = sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(sql.Identifier(key), sets)
    else:
        tail = sql.SQL("ON CONFLICT DO NOTHING")
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(tmp, names)
    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} {}").format(ident, names, names, tmp, tail)
    return copy, insert


def _copy_table(src: sqlite3.Connection, dst: psycopg.Connection[Any], table: str, batch: int,
                advance: Callable[[int], None]) -> int:
    read_cols, write_cols = _columns(src, dst, table)
    extra = table in ROWID_AS
    copy, insert = _insert_sql(table, write_cols)
    dst.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(f"_migrate_{table}"), sql.Identifier(table)))
    last = _done_rowid(dst, table)
    inserted = 0
    select = f"SELECT {', '.join(read_cols)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    while rows := src.execute(select, (last, batch)).fetchall():
        with dst.transaction():
            with dst.cursor() as cur, cur.copy(copy) as cp:
                for r in rows:
                    cp.write_row(r if extra else r[1:])
            inserted += dst.execute(insert).rowcount
            last = rows[-1][0]
            dst.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
                        " SET value = excluded.value", (_progress_key(table), str(last)))
        advance(len(rows))
    return inserted


def _fix_sequences(dst: psycopg.Connection[Any]) -> None:
    """Move every sequence past the copied ids so new rows never collide with them."""
    for table, col in SERIAL_COLUMNS.items():
        dst.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({t}, {c}), COALESCE(MAX({ci}), 1), MAX({ci}) IS NOT NULL)"
                            " FROM {ti}").format(t=sql.Literal(table), c=sql.Literal(col), ci=sql.Identifier(col),
                                                 ti=sql.Identifier(table)))


def _remaining(src: sqlite3.Connection, dst: psycopg.Connection[Any], tables: list[str]) -> dict[str, int]:
    return {t: src.execute(f"SELECT count(*) FROM {t} WHERE rowid > ?", (_done_rowid(dst, t),)).fetchone()[0]
            for t in tables}


def migrate(src_url: str, dst_url: str, *, schema: str | None = None, progress: bool = True, batch: int = 1000,
            events: bool = True) -> dict[str, int]:
    """Copy the SQLite pool at ``src_url`` into the PostgreSQL database ``dst_url`` (its ``schema``, else the
    URL's ``?schema=``, default ``public``); returns table → rows inserted by this run (0 everywhere when already complete)."""
    if not dst_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--to must be a postgresql:// URL")
    path = sqlite_path(src_url)
    target = PostgresStore(dst_url, schema=schema)
    target.open()  # creates or upgrades the destination schema
    target.close()
    tables = [t for t in TABLES if events or t != "events"]
    src = _source(path)
    try:
        with psycopg.connect(target.url, **connect_kwargs(target.schema)) as dst:
            _check_destination(dst, str(path.resolve()))
            return _run(src, dst, tables, batch, progress)
    except psycopg.OperationalError as e:
        raise StoreError(f"cannot reach {redact(dst_url)}: {e}") from None
    finally:
        src.close()


def _run(src: sqlite3.Connection, dst: psycopg.Connection[Any], tables: list[str], batch: int,
         progress: bool) -> dict[str, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    todo = _remaining(src, dst, tables)
    counts: dict[str, int] = {}
    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("migrate", total=sum(todo.values()))
        for table in tables:
            bar.update(task, description=table)
            counts[table] = _copy_table(src, dst, table, batch, lambda n: bar.advance(task, n))
    _fix_sequences(dst)
    with dst.transaction():  # the copied funnel counters plus the slots the copy's triggers added: a recount
        for stmt in [s for counted in (TRAJECTORY_COUNTS, GROUP_COUNTS) for s in pg_recount(counted)]:
            dst.execute(stmt)
    dst.execute("INSERT INTO meta(key, value) VALUES ('migrate.completed_at', %s) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value", (str(time.time()),))
    return counts


__all__ = ["migrate", "sqlite_path", "TABLES"]
