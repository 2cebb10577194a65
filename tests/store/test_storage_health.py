"""Disk-full detection on both backends (the SQLite path is tested end to end on a full tmpfs in
tests/reliability/test_disk_full.py): PostgreSQL's disk_full becomes the same 507, and the health mark
clears when space returns (SQLite: measured) or at the next commit (PostgreSQL)."""

from __future__ import annotations

import sqlite3

import psycopg

from steplake.errors import StorageFullError
from steplake.store.health import StorageHealth, is_disk_full, storage_full_error
from steplake.store.postgres_tx import TxEnv, note_storage, translate


def test_postgres_disk_full_is_a_507_and_marks_the_store() -> None:
    err = translate(psycopg.errors.DiskFull("could not extend file \"base/16384/2619\": No space left on device"))
    assert isinstance(err, StorageFullError) and err.status == 507 and err.code == "insufficient_storage"
    assert err.message.startswith("insufficient storage")
    env = TxEnv(pool=None, schema="s")
    note_storage(env.health, [None, err])
    assert env.health.problem() is not None
    note_storage(env.health, [None])  # a write committed: writes work again
    assert env.health.problem() is None
    assert not is_disk_full(translate(psycopg.errors.UniqueViolation("dup")))


def test_sqlite_full_clears_only_when_space_returns() -> None:
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    free = [0]
    health = StorageHealth(lambda: free[0])
    health.failed(storage_full_error(sqlite3.OperationalError("database or disk is full")))
    health.committed()  # a small write may still fit in old WAL pages: no proof that space returned
    assert "disk is full" in (health.problem() or "")
    free[0] = 64 << 20
    assert health.problem() is None
