"""Exports end to end on a real SqliteStore file: the pool → Parquet read back with pyarrow equals the
pool's records; ``steplake export --from-manifest`` reproduces the content hash after new steps arrived
and reports a diff after a curation change; the HTTP export → download round trip; scopes."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from steplake.api.auth import required_scopes
from steplake.batches.export import content_hash, read_export
from steplake.batches.manifest import read_manifest
from steplake.cli import cli
from steplake.client import AsyncClient
from steplake.config import Settings
from steplake.errors import BadRequestError
from steplake.exports import ExportChangedError, export_pool
from steplake.records import CurationIn, RewardIn, Step
from steplake.store.sqlite import SqliteStore
from tests.api.servers import asgi_client, make_app

Json = dict[str, Any]
CLEAN_ENV: dict[str, str | None] = {f"STEPLAKE_{n.upper()}": None for n in Settings.model_fields}


def add_group(store: Any, gid: str, rewards: list[float], *, channel: str = "train",
              complete: bool = True) -> list[str]:
    """A group of trajectories with two steps each (logprobs, a step reward), completed with rewards."""
    tids = []
    for i, r in enumerate(rewards):
        tid = f"{gid}-t{i}"
        store.create_trajectory(tid, gid, len(rewards), channel, {"agent": "e2e", "task": gid})
        p0 = [1, 2, 3, 100 + i]
        r0 = [40 + i, 41, 42]
        store.append_steps([
            Step(step_id=f"{tid}-s0", trajectory_id=tid, step_index=0, prompt_ids=p0, response_ids=r0,
                 response_logprobs=[-0.1234567, -1.5, -2.25], finish_reason="tool_calls",
                 messages=[{"role": "user", "content": f"task {gid} ✓"}]),
            Step(step_id=f"{tid}-s1", trajectory_id=tid, step_index=1, prompt_ids=p0 + r0 + [7, 8],
                 response_ids=[50, 51], response_logprobs=[-0.333333, -0.7], finish_reason="stop", reward=0.5),
        ])
        if complete:
            store.complete_trajectory(tid, r)
            store.add_reward(RewardIn(trajectory_id=tid, name="final_answer", value=r, version="1"))
        tids.append(tid)
    return tids


def seed(store: Any) -> Any:
    store.publish_policy(3, None, "v3")
    add_group(store, "g0", [1.0, 0.0])
    store.publish_policy(4, None, "v4")
    add_group(store, "g1", [0.5, 0.5, 1.0])
    add_group(store, "g2", [1.0], complete=False)  # open: not exported by default
    store.curate(CurationIn(step_ids=["g0-t0-s1"], quality="good", tags_add=["checked"], reviewer="ann"))
    store.curate(CurationIn(trajectory_ids=["g1-t2"], trainable=False, tags_add=["dup"]))
    return store


@pytest.fixture
def any_pool(store: Any) -> Any:
    """Every Store backend (tests/conftest.py), seeded."""
    return seed(store)


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    """A SqliteStore file the CLI opens too."""
    store = SqliteStore(tmp_path / "pool.db")
    store.open()
    yield seed(store)
    store.close()


def cli_run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=CLEAN_ENV)


def test_parquet_read_back_equals_the_pool(any_pool: Any, tmp_path: Path) -> None:
    pool = any_pool
    out = tmp_path / "out.parquet"
    m = export_pool(pool, path=out, format="parquet", recipe="grpo")
    table = pq.read_table(out)
    assert table.num_rows == m.counts.steps == 10 and m.counts.trajectories == 5 and m.counts.groups == 2
    assert m.policy_versions.values == [3, 4] and m.reward_versions == {"final_answer": ["1"]}
    rows = {r["step_id"]: r for r in table.to_pylist()}
    assert not any(sid.startswith("g2-") for sid in rows)
    for tid in ["g0-t0", "g0-t1", "g1-t0", "g1-t1", "g1-t2"]:
        traj = pool.get_trajectory(tid)
        assert traj is not None
        for step in traj["steps"]:
            row = rows[step["step_id"]]
            for key in ("trajectory_id", "group_id", "step_index", "channel", "prompt_ids", "response_ids",
                        "finish_reason", "policy_version", "continuity", "parent_step_id", "shared_prefix_len"):
                assert row[key] == step[key], key
            assert row["response_logprobs"] == step["response_logprobs"]  # float32 values, exactly
            assert row["step_reward"] == step["reward"] and row["reward"] == traj["reward"]
            assert orjson.loads(row["reward_components"]) == traj["reward_components"]
            assert orjson.loads(row["curation"]) == step["curation"]
            assert orjson.loads(row["trajectory_curation"]) == traj["curation"]
            assert orjson.loads(row["trajectory_metadata"]) == traj["metadata"]
    assert rows["g0-t0-s1"]["quality"] == "good" and rows["g0-t0-s1"]["tags"] == ["checked"]
    assert rows["g1-t2-s0"]["trainable"] is False and rows["g1-t2-s0"]["tags"] == ["dup"]
    assert rows["g0-t0-s0"]["policy_version"] == 3 and rows["g1-t0-s0"]["policy_version"] == 4
    # grpo over each group: g0 rewards (1, 0) → ±0.7071; g1 (0.5, 0.5, 1.0)
    assert rows["g0-t0-s0"]["advantage"] == pytest.approx(0.70710, abs=1e-4)
    assert rows["g0-t1-s1"]["advantage"] == pytest.approx(-0.70710, abs=1e-4)
    assert rows["g1-t2-s0"]["advantage"] == pytest.approx(1.1547, abs=1e-3)
    assert content_hash(read_export(out)) == m.content_hash


def test_filters_and_batch_selection(any_pool: Any, tmp_path: Path) -> None:
    pool = any_pool
    m = export_pool(pool, path=tmp_path / "a.jsonl", format="jsonl",
                    filters={"trainable_only": "true", "min_reward": "0.75"})
    assert sorted(r["step_id"] for r in read_export(tmp_path / "a.jsonl")) == ["g0-t0-s0", "g0-t0-s1"]
    assert m.filters == {"trainable_only": True, "min_reward": 0.75}
    m = export_pool(pool, path=tmp_path / "b.jsonl", format="jsonl", include_open=True, channel="train")
    assert m.counts.trajectories == 6
    with pytest.raises(BadRequestError, match="unknown filter"):
        export_pool(pool, path=tmp_path / "c.jsonl", format="jsonl", filters={"colour": "red"})
    from steplake.records import BatchIn

    sel = pool.select_batch(BatchIn(channel="train", groups=1, recipe="rloo"))
    from steplake.pool.batching import build_batch_answer

    answer = build_batch_answer(pool, BatchIn(channel="train", groups=1, recipe="rloo"), sel)
    m = export_pool(pool, path=tmp_path / "batch.parquet", format="parquet", batch_id=sel.batch_id)
    served = {s["step_id"]: t["advantage"] for g in answer["groups"] for t in g["trajectories"] for s in t["steps"]}
    assert {r["step_id"]: r["advantage"] for r in read_export(tmp_path / "batch.parquet")} == served
    assert m.recipe == "rloo" and m.selection["batch_id"] == sel.batch_id


def test_cli_from_manifest_same_hash_after_new_steps(pool: SqliteStore, tmp_path: Path) -> None:
    db, first = str(tmp_path / "pool.db"), tmp_path / "first.parquet"
    r = cli_run("export", "--db", db, "--out", str(first), "--recipe", "grpo", "--filter", "agent=e2e")
    assert r.exit_code == 0, r.output
    m1 = read_manifest(tmp_path / "first.parquet.manifest.json")
    assert f"content_hash: {m1.content_hash}" in r.output and "rows: 10" in r.output
    # new steps arrive: a new group, and the open trajectory completes
    add_group(pool, "g3", [0.0, 1.0])
    pool.complete_trajectory("g2-t0", 1.0)
    again = tmp_path / "again.parquet"
    r = cli_run("export", "--db", db, "--out", str(again), "--from-manifest", str(first))
    assert r.exit_code == 0, r.output
    assert "matches the source manifest" in r.output
    m2 = read_manifest(tmp_path / "again.parquet.manifest.json")
    assert m2.content_hash == m1.content_hash and m2.counts.steps == 10
    assert m2.selection["source_manifest"].endswith("first.parquet.manifest.json") and m2.recipe == "grpo"
    # the same filters today select more
    r = cli_run("export", "--db", db, "--out", str(tmp_path / "now.jsonl"), "--filter", "agent=e2e")
    assert r.exit_code == 0 and "rows: 16" in r.output


def test_cli_from_manifest_reports_a_curation_change(pool: SqliteStore, tmp_path: Path) -> None:
    db, first = str(tmp_path / "pool.db"), tmp_path / "first.jsonl"
    assert cli_run("export", "--db", db, "--out", str(first)).exit_code == 0
    pool.curate(CurationIn(step_ids=["g1-t0-s1"], quality="bad", reviewer="bob"))
    r = cli_run("export", "--db", db, "--out", str(tmp_path / "x.jsonl"), "--from-manifest", str(first))
    assert r.exit_code == 2
    assert "1 changed" in r.output and "g1-t0-s1" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(ExportChangedError) as err:
        export_pool(pool, path=tmp_path / "y.jsonl", format="jsonl", from_manifest=first)
    assert err.value.details["changed"] == ["g1-t0-s1"] and err.value.details["missing"] == []
    r = cli_run("export", "--db", db, "--out", str(tmp_path / "x.jsonl"), "--from-manifest", str(first),
                "--allow-changes")
    assert r.exit_code == 0 and "changed since the manifest" in r.output
    r = cli_run("export", "--db", db, "--out", str(tmp_path / "z.jsonl"), "--filter", "colour=red")
    assert r.exit_code == 2 and "unknown filter 'colour'" in r.output


async def test_http_export_and_download(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with asgi_client(app) as http:
        add_group(app.state.store, "g0", [1.0, 0.0])
        add_group(app.state.store, "g1", [0.0, 0.5])
        client = AsyncClient("http://testserver", transport=httpx.ASGITransport(app=app))
        ans = await client.export("parquet", tmp_path / "local.parquet", name="first", recipe="grpo",
                                  filters={"reward_present": True})
        assert ans["export_id"] == "first" and ans["download_url"] == "/api/v1/exports/first/download"
        assert ans["path"] == "first.parquet" and (tmp_path / "pool.db.exports" / "first" / "first.parquet").is_file()
        rows = list(read_export(ans["local_path"]))
        assert len(rows) == ans["manifest"]["counts"]["steps"] == 8
        assert content_hash(rows) == ans["manifest"]["content_hash"]
        hf = await client.export("hf", tmp_path / "ds", channel="train")
        assert content_hash(read_export(tmp_path / "ds")) == hf["manifest"]["content_hash"]
        zipped = await http.get(hf["download_url"])
        assert zipped.headers["content-type"] == "application/zip"
        (tmp_path / "ds.zip").write_bytes(zipped.content)
        assert any(n.endswith("steplake_manifest.json") for n in zipfile.ZipFile(tmp_path / "ds.zip").namelist())
        # reproduce by export id after new steps; a clear 409 after a curation change
        add_group(app.state.store, "g2", [1.0, 0.0])
        again = await client.create_export("jsonl", from_manifest="first")
        assert again["manifest"]["content_hash"] == ans["manifest"]["content_hash"]
        app.state.store.curate(CurationIn(step_ids=["g0-t1-s0"], tags_add=["x"]))
        r = await http.post("/api/v1/exports", json={"format": "jsonl", "from_manifest": "first"})
        assert r.status_code == 409 and r.json()["error"]["details"]["changed"] == ["g0-t1-s0"]
        listed = (await http.get("/api/v1/exports")).json()
        assert {e["export_id"] for e in listed["items"]} == {"first", hf["export_id"], again["export_id"]}
        assert (await client.get_export("first"))["manifest"]["recipe"] == "grpo"
        for bad in ({"format": "jsonl", "name": "../escape"}, {"format": "csv"}, {"format": "jsonl", "path": "/x"}):
            assert (await http.post("/api/v1/exports", json=bad)).status_code == 422, bad
        assert (await http.post("/api/v1/exports", json={"format": "jsonl", "name": "first"})).status_code == 409
        r = await http.post("/api/v1/exports", json={"format": "jsonl", "filters": {"status": "nope"}})
        assert r.status_code == 400 and "status" in r.json()["error"]["message"]
        assert (await http.get("/api/v1/exports/..%2Fpool.db/download")).status_code == 404
        assert (await http.get("/api/v1/exports/missing/download")).status_code == 404
        assert not (tmp_path / "escape").exists()


def test_scopes() -> None:
    trainer = {"trainer", "admin"}
    assert required_scopes("POST", "/api/v1/exports") == trainer
    assert required_scopes("GET", "/api/v1/exports/x/download") == trainer  # the dashboard's admin cookie too
    assert required_scopes("POST", "/api/v1/rewards/run") == trainer
