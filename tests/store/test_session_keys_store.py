"""Keys bound to a session (``binding``) in every Store, the schema migration that adds the column, and
``steplake migrate`` carrying it into PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from steplake.errors import ValidationError
from steplake.store.schema import SCHEMA_VERSION
from steplake.store.sqlite import SqliteStore

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")
BINDING = {"trajectory_id": "sess-1", "group_id": "g-1", "channel": "val", "metadata": {"task": "t9"}}


def test_bound_keys_carry_their_binding_and_leave_has_keys_alone(store: Any) -> None:
    rec, secret = store.create_key("agent", "session", BINDING)
    assert rec.binding == BINDING and rec.scope == "agent"
    assert store.lookup_key(secret).binding == BINDING
    assert [k.binding for k in store.list_keys()] == [BINDING]
    assert store.has_keys() is False  # a session key does not switch an open server into "keys required"
    plain, plain_secret = store.create_key("agent", "plain")
    assert plain.binding is None and store.lookup_key(plain_secret).binding is None
    assert store.has_keys() is True
    assert store.revoke_key(plain.key_id) and store.has_keys() is False
    assert store.revoke_key(rec.key_id) is True
    assert store.lookup_key(secret) is None
    assert [k.revoked_at is not None for k in store.list_keys()] == [True, True]


def test_only_trajectory_is_required_and_empty_metadata_is_dropped(store: Any) -> None:
    rec, secret = store.create_key("agent", None, {"trajectory_id": "only", "metadata": {}})
    assert rec.binding == {"trajectory_id": "only"} == store.lookup_key(secret).binding


@pytest.mark.parametrize("scope, binding, code", [
    ("admin", BINDING, "binding_scope"),
    ("trainer", {"trajectory_id": "x"}, "binding_scope"),
    ("agent", {"group_id": "g"}, "invalid_binding"),
    ("agent", {"trajectory_id": "bad id!"}, "invalid_binding"),
    ("agent", {"trajectory_id": "t", "channel": "no spaces"}, "invalid_binding"),
    ("agent", {"trajectory_id": "t", "metadata": [1]}, "invalid_binding"),
    ("agent", {"trajectory_id": "t", "reward": 1}, "invalid_binding"),
])
def test_bad_bindings_are_refused(store: Any, scope: str, binding: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as e:
        store.create_key(scope, None, binding)
    assert e.value.code == code and e.value.status == 422
    assert store.list_keys() == []


def _make_v3(db: Path) -> str:
    """A pool as schema v3 wrote it (no ``keys.binding``) holding one key; returns its secret."""
    s = SqliteStore(db)
    s.open()
    _, secret = s.create_key("admin", "old")
    s.close()
    with sqlite3.connect(db) as c:
        c.execute("ALTER TABLE keys DROP COLUMN binding")
        c.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    return secret


def test_a_session_key_moves_to_the_next_trajectory_of_its_session(store: Any) -> None:
    rec, secret = store.create_key("agent", "s", {"trajectory_id": "s1", "channel": "eval"})
    assert store.rebind_key(rec.key_id, {"trajectory_id": "s2", "channel": "eval", "metadata": {"continues": "s1"}})
    assert store.lookup_key(secret).binding == {"trajectory_id": "s2", "channel": "eval",
                                                "metadata": {"continues": "s1"}}
    plain, _ = store.create_key("agent", "plain")
    assert not store.rebind_key(plain.key_id, {"trajectory_id": "x"})  # an ordinary key never becomes bound
    assert store.has_keys()  # the ordinary key counts; bound ones never do
    with pytest.raises(ValidationError):
        store.rebind_key(rec.key_id, {"trajectory_id": "bad id!"})


def test_a_v3_sqlite_pool_gets_the_binding_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    secret = _make_v3(db)
    with sqlite3.connect(db) as c:
        assert "binding" not in [r[1] for r in c.execute("PRAGMA table_info(keys)")]
    s = SqliteStore(db)
    s.open()
    try:
        old = s.lookup_key(secret)
        assert old is not None and old.scope == "admin" and old.binding is None and s.has_keys()
        _, bound = s.create_key("agent", None, {"trajectory_id": "after-upgrade"})
        assert s.lookup_key(bound).binding == {"trajectory_id": "after-upgrade"}
    finally:
        s.close()
    with sqlite3.connect(db) as c:
        assert "binding" in [r[1] for r in c.execute("PRAGMA table_info(keys)")]
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_the_migration_can_run_again_over_a_pool_that_has_the_column(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    s = SqliteStore(db)
    s.open()
    _, secret = s.create_key("agent", None, {"trajectory_id": "kept"})
    s.close()
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    s = SqliteStore(db)
    s.open()
    try:
        assert s.lookup_key(secret).binding == {"trajectory_id": "kept"}
    finally:
        s.close()


def _pg() -> str:
    if not PG_URL:
        pytest.skip("STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")
    return PG_URL


def test_a_v2_postgres_pool_gets_the_binding_column() -> None:
    from steplake.store.postgres import PostgresStore, connect_kwargs

    url = _pg()
    schema = f"t_keys_{uuid.uuid4().hex[:8]}"
    s = PostgresStore(url, schema=schema, drop_schema_on_close=False)
    s.open()
    _, secret = s.create_key("trainer", "old")
    s.close()
    with psycopg.connect(s.url, **connect_kwargs(schema)) as c:
        c.execute("ALTER TABLE keys DROP COLUMN binding")
        c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    s = PostgresStore(url, schema=schema, drop_schema_on_close=True)
    s.open()
    try:
        assert s.lookup_key(secret).binding is None
        _, bound = s.create_key("agent", None, BINDING)
        assert s.lookup_key(bound).binding == BINDING and s.has_keys()
    finally:
        s.close()


def test_migrate_copies_the_binding(tmp_path: Path) -> None:
    from steplake.store.migrate import migrate
    from steplake.store.postgres import PostgresStore

    url = _pg()
    src = SqliteStore(tmp_path / "pool.db")
    src.open()
    _, bound = src.create_key("agent", "session", BINDING)
    _, plain = src.create_key("admin", "ops")
    src.close()
    schema = f"t_keys_{uuid.uuid4().hex[:8]}"
    counts = migrate(str(tmp_path / "pool.db"), url, schema=schema, progress=False)
    assert counts["keys"] == 2
    dst = PostgresStore(url, schema=schema, drop_schema_on_close=True)
    dst.open()
    try:
        assert dst.lookup_key(bound).binding == BINDING
        assert dst.lookup_key(plain).binding is None and dst.has_keys()
    finally:
        dst.close()
