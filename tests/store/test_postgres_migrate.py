"""``steplake migrate``: a SQLite pool copied into PostgreSQL answers identically through the Store API."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from steplake.batches.export import content_hash, to_export_row
from steplake.records import BatchIn, CurationIn, FeedbackIn, RewardIn, Step
from steplake.store.postgres import PostgresStore, connect_kwargs
from steplake.store.sqlite import SqliteStore

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]
P = list(range(100, 160))


def build_pool(store: SqliteStore) -> dict[str, str]:
    """Clean chains, forks, realigned steps, curation, rewards, feedback, a batch, keys, policy."""
    store.publish_policy(1, "/w/1", "first")
    for g in range(3):
        tids = [f"g{g}-{i}" for i in range(3)]
        store.create_group(f"g{g}", 3, "train", {"task": f"task {g}"}, tids)
        for i, tid in enumerate(tids):
            seq = P + [g, i]
            for k in range(4):
                resp = [500 + k, 600 + i, 2]
                prompt = list(seq) if k != 2 else seq[:5] + [9] * 20  # step 2 forks
                store.append_steps([Step(step_id=f"{tid}-{k}", trajectory_id=tid, step_index=k, prompt_ids=prompt,
                                         response_ids=resp, response_logprobs=[-0.25, -1.5, -0.125],
                                         finish_reason="stop", messages=[{"role": "user", "content": f"q{k}"}],
                                         metadata={"agent": "a"})])
                seq = prompt + resp + [7, 7]
            store.complete_trajectory(tid, None)
            store.add_reward(RewardIn(trajectory_id=tid, name="final_answer", value=float(i == 0), version="1"))
    store.add_reward(RewardIn(trajectory_id="g0-1", name="final_answer", value=0.5, version="2"))
    store.add_reward(RewardIn(step_id="g1-1-0", name="format", value=0.25))
    store.curate(CurationIn(trajectory_ids=["g0-2"], quality="bad", tags_add=["x", "y"], note="n", reviewer="ann"))
    store.curate(CurationIn(step_ids=["g1-0-1"], trainable=False, reviewer="bo"))
    store.add_feedback(FeedbackIn(trajectory_id="g2-0", kind="thumbs", value="up", author="cy"))
    store.add_feedback(FeedbackIn(step_id="g2-1-3", kind="correction", value="42", comment="c"))
    store.append_steps([Step(trajectory_id="open", prompt_ids=P, response_ids=[1, 2])])  # gateway style, open
    sel = store.select_batch(BatchIn(groups=2, recipe="grpo"))
    store.record_batch_details(sel.batch_id, {"step_ids": ["g0-0-0"], "summary": {"n": 1}})
    store.ack_batch(sel.batch_id)
    store.publish_policy(2, None, None)
    _, secret = store.create_key("trainer", "ci")
    return {"batch_id": sel.batch_id, "secret": secret}


def snapshot(store: Any) -> dict[str, Any]:
    trajs = store.list_trajectories({"order": "asc"}, None, 1000).items
    out: dict[str, Any] = {"trajectories": [], "groups": [], "history": {}, "rewards": {}}
    rows = []
    for t in trajs:
        full = store.get_trajectory(t["trajectory_id"])
        out["trajectories"].append(full)
        out["rewards"][t["trajectory_id"]] = store.list_rewards(trajectory_id=t["trajectory_id"])
        for target in [t["trajectory_id"], *(s["step_id"] for s in full["steps"])]:
            out["history"][target] = store.curation_history(target)
        rows += [to_export_row(s, full) for s in full["steps"]]
    out["groups"] = [store.get_group(g["group_id"]) for g in store.list_groups({}, None, 1000).items]
    out["feedback"] = store.list_feedback({})
    out["events"] = store.read_events(0, 100_000)
    out["policy"] = store.get_policy()
    out["keys"] = store.list_keys()
    stats = store.stats()
    stats.pop("store")
    out["stats"] = stats
    out["export_hash"] = content_hash(rows)
    return out


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, str]]]:
    src = SqliteStore(tmp_path / "pool.db")
    src.open()
    info = build_pool(src)
    src.close()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield tmp_path / "pool.db", schema, info
    PostgresStore(PG_URL or "", schema=schema).drop_schema()


def test_migrate_copies_everything_and_resumes(migrated: tuple[Path, str, dict[str, str]]) -> None:
    from steplake.store.migrate import migrate

    path, schema, info = migrated
    assert PG_URL
    counts = migrate(f"sqlite:///{path}", PG_URL, schema=schema, progress=False, batch=7)
    assert counts["steps"] == 37 and counts["trajectories"] == 10 and counts["keys"] == 1
    assert counts["step_text"] == 36  # every step with messages
    src, dst = SqliteStore(path), PostgresStore(PG_URL, schema=schema)
    src.open()
    dst.open()
    try:
        for q in ("q3", "Q2"):  # message search answers the same on the copy
            assert [t["trajectory_id"] for t in dst.list_trajectories({"q": q}, None, 100).items] == \
                [t["trajectory_id"] for t in src.list_trajectories({"q": q}, None, 100).items] != []
        before = snapshot(src)
        assert snapshot(dst) == before
        funnel = src.read_overview(0, window=600, bucket=30)["funnel"]  # counters copied, slots the copy added: once
        assert dst.read_overview(0, window=600, bucket=30)["funnel"] == funnel
        assert funnel["stages"][0] == {"name": "collected", "count": 10}
        assert dst.get_batch(info["batch_id"]) == src.get_batch(info["batch_id"])
        assert dst.lookup_key(info["secret"]).scope == "trainer"
        # a second run adds nothing
        assert set(migrate(str(path), PG_URL, schema=schema, progress=False).values()) == {0}
        assert snapshot(dst) == before
        assert dst.read_overview(0, window=600, bucket=30)["funnel"] == funnel
        # the copy is a working pool: an open trajectory continues cleanly, new ids follow the copied ones
        dst.append_steps([Step(trajectory_id="open", prompt_ids=P + [1, 2, 3], response_ids=[4])])
        steps = dst.get_trajectory("open")["steps"]
        assert [s["continuity"] for s in steps] == ["first", "clean"] and steps[1]["step_index"] == 1
        assert dst.read_events(before["events"][-1]["id"])[0]["kind"] == "step"
    finally:
        src.close()
        dst.close()


def test_interrupted_migration_continues_where_it_stopped(migrated: tuple[Path, str, dict[str, str]]) -> None:
    from steplake.store.migrate import migrate

    path, schema, _ = migrated
    assert PG_URL
    migrate(str(path), PG_URL, schema=schema, progress=False, batch=5)
    with psycopg.connect(PG_URL, **connect_kwargs(schema)) as conn:  # as if it died after 20 steps
        conn.execute("DELETE FROM steps WHERE seq > 20")
        conn.execute("DELETE FROM events WHERE id > 50")
        conn.execute("UPDATE meta SET value = '20' WHERE key = 'migrate.steps.rowid'")
        conn.execute("UPDATE meta SET value = '50' WHERE key = 'migrate.events.rowid'")
    counts = migrate(str(path), PG_URL, schema=schema, progress=False, batch=5)
    assert counts["steps"] == 17 and counts["trajectories"] == 0 and counts["events"] > 0
    src, dst = SqliteStore(path), PostgresStore(PG_URL, schema=schema)
    src.open()
    dst.open()
    try:
        assert snapshot(dst) == snapshot(src)
    finally:
        src.close()
        dst.close()


def test_migrate_refuses_a_foreign_destination(migrated: tuple[Path, str, dict[str, str]], tmp_path: Path) -> None:
    from steplake.errors import ConfigError
    from steplake.store.migrate import migrate

    path, schema, _ = migrated
    assert PG_URL
    migrate(str(path), PG_URL, schema=schema, progress=False)
    other = tmp_path / "other.db"
    s = SqliteStore(other)
    s.open()
    s.close()
    with pytest.raises(ConfigError):
        migrate(str(other), PG_URL, schema=schema, progress=False)
    with pytest.raises(ConfigError):
        migrate(str(tmp_path / "missing.db"), PG_URL, schema=schema, progress=False)
