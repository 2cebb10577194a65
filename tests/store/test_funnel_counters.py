"""The overview's funnel reads counters kept on write (store/funnel_sql.py): after every kind of write they equal
a fresh count of the rows (trajectories and groups), on every backend; an old pool gets them counted by the schema
migration."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from steplake.pool.lifecycle import prune
from steplake.records import BatchIn, CurationIn, RewardIn, Step
from steplake.store.funnel_sql import GROUP_COUNTS, full_count_sql
from steplake.store.schema import MIGRATIONS, SCHEMA_FUNNEL

P = list(range(100, 120))
NAMES = ["collected", "complete", "abandoned", "rewarded", "curated", "untrainable"]
GROUP_NAMES = ["ready", "leased", "consumed"]


def _step(tid: str, i: int = 0, **kw: Any) -> Step:
    return Step(step_id=f"{tid}-{i}", trajectory_id=tid, step_index=i, prompt_ids=P + [7] * i, response_ids=[1], **kw)


def _rows(store: Any, sql: str) -> list[tuple[Any, ...]]:
    if hasattr(store, "path"):
        raw = sqlite3.connect(store.path)
        try:
            with raw:
                return raw.execute(sql).fetchall()
        finally:
            raw.close()
    with store._conn() as conn:
        return list(conn.execute(sql).fetchall())


def _exec(store: Any, sql: str) -> None:
    if hasattr(store, "path"):
        raw = sqlite3.connect(store.path)
        with raw:
            raw.execute(sql)
        raw.close()
        return
    with store._conn() as conn:
        conn.execute(sql)


def _counted(store: Any) -> dict[str, int]:
    funnel = store.read_overview(0, window=600, bucket=30)["funnel"]
    stages = {s["name"]: s["count"] for s in funnel["stages"]}
    return {"collected": stages["collected"], "complete": stages["complete"], "abandoned": funnel["abandoned"],
            "rewarded": stages["rewarded"], "curated": stages["curated"], "untrainable": funnel["untrainable"]}


def _group_stages(store: Any) -> dict[str, int]:
    stages = {s["name"]: s["count"] for s in store.read_overview(0, window=600, bucket=30)["funnel"]["stages"]}
    return {name: stages[name] for name in GROUP_NAMES}


def _group_fresh(store: Any) -> dict[str, int]:
    ready, leased, consumed = (int(v or 0) for v in _rows(store, full_count_sql(GROUP_COUNTS))[0])
    return {"ready": ready + leased + consumed, "leased": leased, "consumed": consumed}


def _groups_same(store: Any, **want: int) -> None:
    got = _group_stages(store)
    assert got == _group_fresh(store)
    assert {k: got[k] for k in want} == want


def _fresh(store: Any) -> dict[str, int]:
    return dict(zip(NAMES, (int(v or 0) for v in _rows(store, full_count_sql())[0]), strict=True))


def _same(store: Any, **want: int) -> None:
    got = _counted(store)
    assert got == _fresh(store)
    assert {k: got[k] for k in want} == want


def test_funnel_counters_follow_every_write(store: Any) -> None:
    _same(store, collected=0)
    store.create_group("G", 3, "train", {}, ["g1", "g2", "g3"])  # creates
    store.create_trajectory("lone", None, None, None, {})
    _same(store, collected=4, complete=0)
    store.append_steps([_step("g1", finish_reason="stop"), _step("g2", finish_reason="length"),
                        _step("g3", finish_reason="stop"), _step("new")])
    _same(store, collected=5)
    store.complete_trajectory("g1", 1.0)  # complete with a reward
    store.complete_trajectory("lone", None)  # complete without one
    _same(store, complete=2, rewarded=1)
    assert store.sweep_idle(300, now=time.time() + 1000) == 3  # g3: complete; g2, new: abandoned
    _same(store, complete=3, abandoned=2, rewarded=1)
    store.append_steps([_step("g2", 1)])  # reopens g2
    _same(store, abandoned=1)
    store.curate(CurationIn(trajectory_ids=["g1"], trainable=False, reviewer="ann"))
    store.curate(CurationIn(trajectory_ids=["g3"], quality="good"))
    _same(store, curated=2, untrainable=1)
    store.curate(CurationIn(trajectory_ids=["g1"], trainable=True))
    _same(store, untrainable=0)
    store.add_reward(RewardIn(trajectory_id="lone", name="judge", value=0.5))  # reward recomputed
    store.add_reward(RewardIn(trajectory_id="g2", name="judge", value=0.5))  # open: not yet "rewarded"
    _same(store, rewarded=2)
    assert store.delete_trajectory("g1") is True
    assert store.delete_trajectory("g1") is False
    _same(store, collected=4, complete=2, rewarded=1, curated=1)
    assert sum(prune(store, {"*": 0.0}, now=time.time() + 5000).values()) == 3  # all but the open g2
    _same(store, collected=1, complete=0, abandoned=0, rewarded=0, curated=0)
    # rows written whole (as a copy between pools does): the full triggers count every state of the row
    _exec(store, "INSERT INTO trajectories(trajectory_id, group_id, channel, status, reward, quality, trainable,"
                 " created_at, updated_at) VALUES ('raw', 'raw', 'train', 'complete', 1.0, 'good', 0, 1, 1)")
    _same(store, collected=2, complete=1, rewarded=1, curated=1, untrainable=1)
    _exec(store, "INSERT INTO trajectories(trajectory_id, group_id, channel, created_at, updated_at)"
              " VALUES ('plain', 'plain', 'train', 1, 1)")
    _same(store, collected=3, complete=1)
    _exec(store, "DELETE FROM trajectories WHERE trajectory_id IN ('raw', 'plain')")
    _same(store, collected=1, complete=0, rewarded=0, curated=0, untrainable=0)


def test_group_counters_follow_every_write(store: Any) -> None:
    _groups_same(store, ready=0, leased=0, consumed=0)
    for g in ("A", "B", "C"):  # created with their trajectories
        store.create_group(g, 2, "train", {}, [f"{g}1", f"{g}2"])
    store.append_steps([_step(t, finish_reason="stop") for t in ("A1", "A2", "B1", "B2", "C1")]
                       + [Step(trajectory_id="D1", group_id="D", prompt_ids=P, response_ids=[1])])  # opens D
    _groups_same(store, ready=0)
    for t in ("A1", "A2", "B1", "B2"):  # completion: A and B become ready
        store.complete_trajectory(t, 1.0)
    _groups_same(store, ready=4)
    assert store.sweep_idle(300, now=time.time() + 1000) == 3  # C1 complete; C2, D1 abandoned: C, D ready
    _groups_same(store, ready=5)
    store.append_steps([_step("C2", finish_reason="stop")])  # reopens C2
    store.complete_trajectory("C2", 0.0)
    _groups_same(store, ready=6, leased=0)
    short = store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=0.2))  # batch lease
    held = store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=60))
    _groups_same(store, ready=6, leased=4, consumed=0)
    store.ack_batch(held.batch_id)  # ack
    _groups_same(store, ready=6, leased=2, consumed=2)
    time.sleep(0.3)  # lease expiry: served again, then acked
    again = store.select_batch(BatchIn(channel="train", groups=3, lease_seconds=60))
    assert short.groups[0]["group_id"] in {g["group_id"] for g in again.groups}
    _groups_same(store, leased=4, consumed=2)
    store.ack_batch(again.batch_id)
    store.ack_batch(short.batch_id)  # late ack: nothing changes
    _groups_same(store, ready=6, leased=0, consumed=6)
    assert store.delete_trajectory("A1") is True  # a delete takes its completion out of the group
    _groups_same(store, ready=5, consumed=5)
    assert sum(prune(store, {"*": 0.0}, now=time.time() + 5000).values()) == 6  # retention
    _groups_same(store, ready=0, leased=0, consumed=0)
    store.create_group("E", 1, "train", {}, ["E1"])
    store.append_steps([_step("E1")])
    store.complete_trajectory("E1", 1.0)
    _groups_same(store, ready=1)
    _exec(store, "DELETE FROM groups WHERE group_id = 'E'")  # a group row deleted
    _groups_same(store, ready=0)


def test_old_pool_gets_its_funnel_counted_by_the_migration(store: Any) -> None:
    store.append_steps([_step("a", finish_reason="stop"), _step("b"), _step("c")])
    store.complete_trajectory("a", 1.0)
    store.curate(CurationIn(trajectory_ids=["b"], trainable=False))
    store.create_group("G", 2, "train", {}, ["g1", "g2"])
    store.append_steps([_step("g1"), _step("g2")])
    store.complete_trajectory("g1", 1.0)
    store.complete_trajectory("g2", 0.0)
    store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=60))
    want, want_groups = _counted(store), _group_stages(store)
    drop, store.drop_schema_on_close = getattr(store, "drop_schema_on_close", False), False
    store.close()
    if hasattr(store, "path"):  # back to the schema before the funnel counters
        raw = sqlite3.connect(store.path)
        with raw:
            triggers = raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'funnel%'")
            for (name,) in triggers.fetchall():
                raw.execute(f"DROP TRIGGER {name}")
            raw.execute("DELETE FROM counters WHERE name LIKE 'funnel%'")
            raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(MIGRATIONS.index(SCHEMA_FUNNEL)),))
        raw.close()
    else:
        import psycopg

        from steplake.store.postgres import connect_kwargs
        from steplake.store.postgres_schema import PG_MIGRATIONS, PG_SCHEMA_FUNNEL

        with psycopg.connect(store.url, **connect_kwargs(store.schema)) as conn:
            for name in ("steplake_funnel_insert", "steplake_funnel_delete", "steplake_funnel_update"):
                conn.execute(f"DROP TRIGGER {name} ON trajectories")
                conn.execute(f"DROP TRIGGER {name.replace('funnel', 'funnel_groups')} ON groups")
            conn.execute("DELETE FROM counters WHERE name LIKE 'funnel%'")
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                         (str(PG_MIGRATIONS.index(PG_SCHEMA_FUNNEL)),))
    store.open()
    store.drop_schema_on_close = drop
    assert _counted(store) == want == {"collected": 5, "complete": 3, "abandoned": 0, "rewarded": 3, "curated": 1,
                                       "untrainable": 1}
    assert _group_stages(store) == want_groups == {"ready": 3, "leased": 1, "consumed": 0}  # a's group leased
    store.append_steps([_step("d")])  # the triggers are back
    _same(store, collected=6)
    store.delete_trajectory("g1")
    _groups_same(store, ready=2, leased=1)
