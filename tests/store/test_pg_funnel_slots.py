"""PostgreSQL's funnel counters are slotted (store/funnel_sql.py): a transaction that opened a trajectory and has
not committed yet does not make another server's append wait for it, the funnel still equals a fresh count, and a
pool from the single-row schema upgrades in place and keeps counting."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from steplake.records import Step
from steplake.store.dialect import POSTGRES
from steplake.store.funnel_sql import GROUP_COUNTS, SLOTS, full_count_sql
from steplake.store.postgres import PostgresStore, connect_kwargs
from steplake.store.postgres_schema import PG_MIGRATIONS, PG_SCHEMA_FUNNEL_SLOTS
from steplake.store.upgrade import record_version, upgrade_schema

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]
INSERT = ("INSERT INTO trajectories(trajectory_id, group_id, channel, status, reward, created_at, updated_at)"
          " VALUES (%s, %s, 'train', %s, %s, 1, 1)")


@pytest.fixture
def pg() -> Iterator[PostgresStore]:
    assert PG_URL
    store = PostgresStore(PG_URL, schema=f"t_{uuid.uuid4().hex[:12]}", drop_schema_on_close=True)
    store.open()
    try:
        yield store
    finally:
        store.close()


def _connect(store: PostgresStore) -> psycopg.Connection[Any]:
    return psycopg.connect(store.url, **connect_kwargs(store.schema))


def _funnel(store: PostgresStore) -> dict[str, int]:
    funnel = store.read_overview(0, window=600, bucket=30)["funnel"]
    stages = {s["name"]: s["count"] for s in funnel["stages"]}
    return {"collected": stages["collected"], "complete": stages["complete"], "abandoned": funnel["abandoned"],
            "rewarded": stages["rewarded"], "curated": stages["curated"], "untrainable": funnel["untrainable"],
            "ready": stages["ready"], "leased": stages["leased"], "consumed": stages["consumed"]}


def _fresh(store: PostgresStore) -> dict[str, int]:
    with _connect(store) as conn:
        t = [int(v or 0) for v in conn.execute(full_count_sql()).fetchone() or ()]
        ready, leased, consumed = (int(v or 0) for v in conn.execute(full_count_sql(GROUP_COUNTS)).fetchone() or ())
    return dict(zip(["collected", "complete", "abandoned", "rewarded", "curated", "untrainable"], t, strict=True)) | {
        "ready": ready + leased + consumed, "leased": leased, "consumed": consumed}


def _slot_rows(store: PostgresStore) -> int:
    with _connect(store) as conn:
        return int(conn.execute("SELECT count(*) FROM counters WHERE name LIKE 'funnel%#%'").fetchone()[0])  # type: ignore[index]


def test_an_uncommitted_trajectory_insert_does_not_block_another(pg: PostgresStore) -> None:
    pg.append_steps([Step(trajectory_id="before", prompt_ids=[1, 2], response_ids=[3], finish_reason="stop")])
    with _connect(pg) as first, _connect(pg) as second:
        first.execute("BEGIN")
        first.execute(INSERT, ("first", "first", "complete", 1.0))  # its counter rows stay locked until commit
        held = int(first.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        second.execute("SET lock_timeout = '2s'")
        for _ in range(4):  # another transaction of the same slot would wait, as any writer of one row does
            second.execute("BEGIN")
            if int(second.execute("SELECT txid_current()").fetchone()[0]) % SLOTS != held % SLOTS:  # type: ignore[index]
                break
            second.execute("ROLLBACK")
        second.execute(INSERT, ("second", "second", "open", None))  # single-row counters: lock timeout here
        second.execute("COMMIT")
        assert _funnel(pg) == _fresh(pg)  # the committed rows only
        assert _funnel(pg)["collected"] == 2
        first.execute("COMMIT")
    assert _funnel(pg) == _fresh(pg)
    assert {k: _funnel(pg)[k] for k in ("collected", "complete", "rewarded")} == {"collected": 3, "complete": 1,
                                                                                   "rewarded": 1}
    assert _slot_rows(pg) >= 2


def test_a_single_row_pool_upgrades_in_place_and_keeps_counting(pg: PostgresStore) -> None:
    old = PostgresStore(pg.url, schema=f"t_{uuid.uuid4().hex[:12]}", drop_schema_on_close=True)
    before = PG_MIGRATIONS.index(PG_SCHEMA_FUNNEL_SLOTS)
    with _connect(old) as conn:  # a pool at the schema before the slots, with counts
        with conn.transaction():
            conn.execute(f'CREATE SCHEMA "{old.schema}"')
            upgrade_schema(conn.execute, PG_MIGRATIONS[:before])
            record_version(conn.execute, POSTGRES, before)
        conn.execute("INSERT INTO groups(group_id, channel, size, n_complete, status, created_at, updated_at)"
                     " VALUES ('G', 'train', 2, 2, 'ready', 1, 1), ('H', 'train', 1, 1, 'consumed', 1, 1)")
        conn.execute(INSERT, ("g1", "G", "complete", 1.0))
        conn.execute(INSERT, ("g2", "G", "complete", 0.0))
        conn.execute(INSERT, ("h1", "H", "complete", None))
        conn.execute(INSERT, ("o1", "O", "open", None))
        conn.execute("UPDATE trajectories SET status = 'abandoned' WHERE trajectory_id = 'o1'")
    old.open()  # upgrades
    try:
        want = {"collected": 4, "complete": 3, "abandoned": 1, "rewarded": 2, "curated": 0, "untrainable": 0,
                "ready": 3, "leased": 0, "consumed": 1}
        assert _slot_rows(old) == 0 and _funnel(old) == _fresh(old) == want
        old.append_steps([Step(trajectory_id="new", prompt_ids=[1, 2], response_ids=[3])])
        old.complete_trajectory("new", 1.0)  # complete, rewarded, its group of one ready
        assert _slot_rows(old) > 0
        assert _funnel(old) == _fresh(old) == want | {"collected": 5, "complete": 4, "rewarded": 3, "ready": 4}
        assert old.delete_trajectory("g2") is True
        assert _funnel(old) == _fresh(old) == want | {"collected": 4, "complete": 3, "rewarded": 2, "ready": 3}
        with _connect(old) as conn, conn.transaction():  # a recount (the migration run again): slots not twice
            for stmt in PG_MIGRATIONS[before - 2].split(";\n") + PG_MIGRATIONS[before - 1].split(";\n"):
                conn.execute(stmt)
        assert _slot_rows(old) == 0 and _funnel(old) == _fresh(old)
    finally:
        old.close()
