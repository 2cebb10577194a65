"""The overview's funnel reads counters kept on write (store/funnel_sql.py): after every kind of write they equal
a fresh count of the rows, on every backend; an old pool gets them counted by the schema migration."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from steplake.pool.lifecycle import prune
from steplake.records import CurationIn, RewardIn, Step
from steplake.store.funnel_sql import full_count_sql

P = list(range(100, 120))
NAMES = ["collected", "complete", "abandoned", "rewarded", "curated", "untrainable"]


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


def _counted(store: Any) -> dict[str, int]:
    funnel = store.read_overview(0, window=600, bucket=30)["funnel"]
    stages = {s["name"]: s["count"] for s in funnel["stages"]}
    return {"collected": stages["collected"], "complete": stages["complete"], "abandoned": funnel["abandoned"],
            "rewarded": stages["rewarded"], "curated": stages["curated"], "untrainable": funnel["untrainable"]}


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


def test_old_pool_gets_its_funnel_counted_by_the_migration(store: Any) -> None:
    store.append_steps([_step("a", finish_reason="stop"), _step("b"), _step("c")])
    store.complete_trajectory("a", 1.0)
    store.curate(CurationIn(trajectory_ids=["b"], trainable=False))
    want = _counted(store)
    drop, store.drop_schema_on_close = getattr(store, "drop_schema_on_close", False), False
    store.close()
    if hasattr(store, "path"):  # back to the schema before the funnel counters
        raw = sqlite3.connect(store.path)
        with raw:
            for name in ("funnel_insert", "funnel_delete", "funnel_update"):
                raw.execute(f"DROP TRIGGER {name}")
            raw.execute("DELETE FROM counters WHERE name LIKE 'funnel%'")
            version = int(raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version - 1),))
        raw.close()
    else:
        import psycopg

        from steplake.store.postgres import connect_kwargs

        with psycopg.connect(store.url, **connect_kwargs(store.schema)) as conn:
            for name in ("steplake_funnel_insert", "steplake_funnel_delete", "steplake_funnel_update"):
                conn.execute(f"DROP TRIGGER {name} ON trajectories")
            conn.execute("DELETE FROM counters WHERE name LIKE 'funnel%'")
            conn.execute("UPDATE meta SET value = (value::int - 1)::text WHERE key = 'schema_version'")
    store.open()
    store.drop_schema_on_close = drop
    assert _counted(store) == want == {"collected": 3, "complete": 1, "abandoned": 0, "rewarded": 1, "curated": 1,
                                       "untrainable": 1}
    store.append_steps([_step("d")])  # the triggers are back
    _same(store, collected=4)
