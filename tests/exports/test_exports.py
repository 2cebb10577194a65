"""Exports: JSONL / Parquet / HF folders read back equal to their rows; hashes; manifests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from steplake.batches.export import (
    COLUMN_NAMES,
    EXPORT_SCHEMA,
    ExportError,
    content_hash,
    diff_rows,
    normalize_row,
    read_export,
    rows_from_batch,
    to_export_row,
    verify,
    write_export,
)
from steplake.batches.manifest import manifest_path_for, read_manifest

Json = dict[str, Any]


def make_step(i: int, *, logprobs: bool = True) -> Json:
    rng = random.Random(i)
    n = 3 + i % 5
    return {
        "step_id": f"s{i:04d}",
        "trajectory_id": f"t{i // 3}",
        "group_id": f"g{i // 6}",
        "step_index": i % 3,
        "channel": "train",
        "prompt_ids": [rng.randrange(0, 50_000) for _ in range(8 + i % 4)],
        "response_ids": [rng.randrange(0, 50_000) for _ in range(n)],
        "response_logprobs": [-rng.random() * 5 for _ in range(n)] if logprobs else None,
        "token_source": "upstream" if logprobs else "tokenizer",
        "messages": [{"role": "user", "content": f"task {i} — ünïcode ✓"}],
        "tools": [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}],
        "response": {"content": f"answer {i}", "tool_calls": None, "reasoning": None},
        "finish_reason": "stop",
        "model": "smol",
        "sampling": {"temperature": 0.7, "top_p": 1},
        "usage": {"prompt_tokens": 8, "completion_tokens": n},
        "latency_ms": 1.5 * i,
        "policy_version": i % 3,
        "reward": 0.25 if i % 3 == 2 else None,
        "metadata": {"agent": "demo", "nested": {"b": 1, "a": [1, 2]}},
        "provenance": {"upstream": "local"},
        "continuity": "first" if i % 3 == 0 else "clean",
        "parent_step_id": None if i % 3 == 0 else f"s{i - 1:04d}",
        "shared_prefix_len": 0 if i % 3 == 0 else 8,
        "created_at": 1_700_000_000.123456 + i,
        "curation": {
            "quality": "bad" if i == 4 else "unreviewed",
            "trainable": i != 5,
            "tags": ["s"] if i == 1 else [],
        },
    }


def make_traj(t: int) -> Json:
    return {
        "trajectory_id": f"t{t}",
        "group_id": f"g{t // 2}",
        "reward": float(t % 2),
        "reward_components": {
            "final_answer": {"value": float(t % 2), "version": "1"},
            "length_penalty": {"value": -0.1, "version": "2" if t else "1"},
        },
        "metadata": {"ground_truth": str(t)},
        "curation": {
            "quality": "good" if t == 0 else "unreviewed",
            "trainable": True,
            "tags": ["x"],
            "note": None,
            "reviewer": None,
            "updated_at": None,
        },
    }


def make_rows(n: int = 24) -> list[Json]:
    return [
        to_export_row(make_step(i, logprobs=i != 7), make_traj(i // 3), advantage=0.5 - i % 2)
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_round_trip_equal_rows(tmp_path: Path, fmt: str) -> None:
    rows = make_rows()
    target = tmp_path / f"export.{fmt}"
    manifest = write_export(
        rows, target, fmt, manifest_info={"filters": {"channel": "train"}, "recipe": "grpo"}, chunk_rows=7
    )
    back = list(read_export(target))
    assert back == [normalize_row(r) for r in rows]
    assert list(back[0]) == list(COLUMN_NAMES)
    assert (
        back[7]["response_logprobs"] is None and back[0]["response_logprobs"] == rows[0]["response_logprobs"]
    )
    assert verify(manifest, back)
    assert content_hash(back) == manifest.content_hash
    assert manifest.counts.steps == 24 and manifest.counts.trajectories == 8 and manifest.counts.groups == 4
    assert manifest_path_for(target, fmt).exists()


def test_hash_is_independent_of_format_order_and_chunking(tmp_path: Path) -> None:
    rows = make_rows()
    hashes = {write_export(rows, tmp_path / f"a.{f}", f).content_hash for f in ("jsonl", "parquet", "hf")}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    hashes.add(write_export(shuffled, tmp_path / "b.parquet", "parquet", chunk_rows=5).content_hash)
    hashes.add(content_hash(shuffled))
    assert len(hashes) == 1
    changed = [dict(r) for r in rows]
    changed[3]["reward"] = 0.5
    assert content_hash(changed) not in hashes


def test_parquet_columns_as_pyarrow_sees_them(tmp_path: Path) -> None:
    rows = make_rows(12)
    write_export(rows, tmp_path / "x.parquet", "parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.equals(EXPORT_SCHEMA, check_metadata=False)
    cols = table.to_pydict()
    assert cols["prompt_ids"] == [r["prompt_ids"] for r in rows]
    assert cols["response_logprobs"][:3] == [r["response_logprobs"] for r in rows[:3]]
    assert cols["reward"] == [float((i // 3) % 2) for i in range(12)]
    assert cols["step_reward"][2] == 0.25 and cols["advantage"][:2] == [0.5, -0.5]
    assert cols["quality"][:5] == ["good", "good", "good", "unreviewed", "bad"]
    assert cols["trainable"][5] is False and cols["tags"][1] == ["s", "x"]
    assert json.loads(cols["reward_components"][0])["final_answer"] == {"value": 0.0, "version": "1"}
    assert cols["policy_version"][:3] == [0, 1, 2]
    assert pq.ParquetFile(tmp_path / "x.parquet").metadata.num_row_groups == 1


def test_hf_folder_loads_with_datasets(tmp_path: Path) -> None:
    import datasets

    write_export(make_rows(6), tmp_path / "hf", "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 6 and ds[0]["step_id"] == "s0000" and ds[0]["prompt_ids"] == make_step(0)["prompt_ids"]
    manifest = read_manifest(tmp_path / "hf")
    assert manifest.format == "hf" and "state.json" in manifest.files and len(manifest.step_ids) == 6
    assert (tmp_path / "hf" / "steplake_manifest.stepids").exists()


def test_manifest_round_trip_and_fields(tmp_path: Path) -> None:
    rows = make_rows()
    target = tmp_path / "e.jsonl"
    written = write_export(
        rows,
        target,
        "jsonl",
        manifest_info={
            "filters": {"trainable_only": True},
            "recipe": "rloo",
            "batch_id": "b1",
            "created_at": 123.0,
        },
    )
    path = manifest_path_for(target, "jsonl")
    assert path.name == "e.jsonl.manifest.json" and (tmp_path / "e.jsonl.stepids").exists()
    raw = json.loads(path.read_text())
    assert "step_ids" not in raw and raw["step_ids_file"] == "e.jsonl.stepids"
    m = read_manifest(path)
    assert m == written
    assert m.created_at == 123.0 and m.filters == {"trainable_only": True} and m.recipe == "rloo"
    assert m.selection == {"batch_id": "b1", "schema_version": 1}
    assert m.step_ids == sorted(r["step_id"] for r in rows) and len(m.row_digests) == 24
    assert m.reward_versions == {"final_answer": ["1"], "length_penalty": ["1", "2"]}
    assert m.policy_versions.values == [0, 1, 2] and (m.policy_versions.min, m.policy_versions.max) == (0, 2)
    assert m.counts.prompt_tokens == sum(len(r["prompt_ids"]) for r in rows)
    assert m.counts.tokens == m.counts.prompt_tokens + m.counts.response_tokens
    assert m.format == "jsonl" and m.files == ["e.jsonl"] and m.columns == list(COLUMN_NAMES)
    assert len(m.content_hash) == 64 and len(m.curation_hash) == 64 and len(m.step_ids_hash) == 64


def test_curation_hash_tracks_curation_only(tmp_path: Path) -> None:
    rows = make_rows(6)
    a = write_export(rows, tmp_path / "a.jsonl", "jsonl")
    relabeled = [dict(r) for r in rows]
    relabeled[0]["quality"] = "bad"
    b = write_export(relabeled, tmp_path / "b.jsonl", "jsonl")
    rewarded = [dict(r) for r in rows]
    rewarded[0]["reward"] = 7.0
    c = write_export(rewarded, tmp_path / "c.jsonl", "jsonl")
    assert a.curation_hash != b.curation_hash and a.curation_hash == c.curation_hash
    assert a.step_ids_hash == b.step_ids_hash == c.step_ids_hash


def test_rebuild_from_manifest_and_diff(tmp_path: Path) -> None:
    rows = make_rows()
    write_export(rows, tmp_path / "x.parquet", "parquet")
    manifest = read_manifest(tmp_path / "x.parquet.manifest.json")
    by_id = {r["step_id"]: r for r in rows}
    rebuilt = [by_id[s] for s in manifest.step_ids]  # what --from-manifest re-selects
    again = write_export(rebuilt, tmp_path / "y.jsonl", "jsonl")
    assert again.content_hash == manifest.content_hash and verify(manifest, rebuilt)
    drifted = [dict(r) for r in rebuilt[1:]] + [to_export_row(make_step(99), make_traj(0))]
    drifted[0]["quality"] = "bad"
    assert not verify(manifest, drifted)
    assert diff_rows(manifest, drifted) == {"missing": ["s0000"], "extra": ["s0099"], "changed": ["s0001"]}


def test_sidecar_tampering_is_detected(tmp_path: Path) -> None:
    write_export(make_rows(4), tmp_path / "x.jsonl", "jsonl")
    sidecar = tmp_path / "x.jsonl.stepids"
    sidecar.write_text(sidecar.read_text().replace("s0000", "s9999"))
    with pytest.raises(ValueError, match="step_ids_hash"):
        read_manifest(tmp_path / "x.jsonl.manifest.json")


def test_bad_requests(tmp_path: Path) -> None:
    rows = make_rows(3)
    with pytest.raises(ExportError, match="unknown export format"):
        write_export(rows, tmp_path / "x.csv", "csv")
    write_export(rows, tmp_path / "x.jsonl", "jsonl")
    with pytest.raises(ExportError, match="already exists"):
        write_export(rows, tmp_path / "x.jsonl", "jsonl")
    write_export(rows[:1], tmp_path / "x.jsonl", "jsonl", overwrite=True)
    assert len(list(read_export(tmp_path / "x.jsonl"))) == 1
    with pytest.raises(ExportError, match="step_id"):
        write_export([{"trajectory_id": "t"}], tmp_path / "y.parquet", "parquet")
    too_big = dict(rows[0], prompt_ids=[2**31])
    with pytest.raises(ExportError, match="schema"):
        write_export([too_big], tmp_path / "z.parquet", "parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x.jsonl",
        "x.jsonl.manifest.json",
        "x.jsonl.stepids",
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_empty_export(tmp_path: Path, fmt: str) -> None:
    m = write_export([], tmp_path / f"e.{fmt}", fmt)
    assert m.counts.steps == 0 and list(read_export(tmp_path / f"e.{fmt}")) == []
    assert m.content_hash == content_hash([])


def test_rows_from_batch_answer() -> None:
    steps = [make_step(i) for i in range(3)]
    batch = {
        "groups": [
            {
                "group_id": "g0",
                "trajectories": [
                    {
                        "trajectory_id": "t0",
                        "reward": 1.0,
                        "advantage": 0.7,
                        "quality": "good",
                        "steps": steps[::-1],
                    }
                ],
            }
        ]
    }
    rows = list(rows_from_batch(batch))
    assert [r["step_id"] for r in rows] == ["s0000", "s0001", "s0002"]
    assert all(r["advantage"] == 0.7 and r["reward"] == 1.0 for r in rows)
    assert rows[0]["quality"] == "good" and rows[1]["tags"] == ["s"]


def test_numpy_and_array_ids_take_the_fast_path_with_the_same_hash(tmp_path: Path) -> None:
    import array

    import numpy as np

    rows = make_rows(9)
    fast = [
        dict(
            r,
            prompt_ids=np.asarray(r["prompt_ids"], dtype=np.int64),
            response_ids=array.array("i", r["response_ids"]),
            response_logprobs=None if r["response_logprobs"] is None else np.asarray(r["response_logprobs"]),
        )
        for r in rows
    ]
    assert fast[7]["response_logprobs"] is None
    m = write_export(fast, tmp_path / "f.parquet", "parquet")
    assert m.content_hash == content_hash(rows)
    assert list(read_export(tmp_path / "f.parquet")) == [normalize_row(r) for r in rows]
    with pytest.raises(ExportError, match="int32"):
        write_export([dict(rows[0], prompt_ids=np.array([2**40]))], tmp_path / "g.parquet", "parquet")
    with pytest.raises(ExportError, match="integers"):
        write_export([dict(rows[0], prompt_ids=np.array([1.5]))], tmp_path / "h.parquet", "parquet")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_failing_row_source_leaves_nothing_behind(tmp_path: Path, fmt: str) -> None:
    def rows() -> Any:
        yield from make_rows(5)
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError, match="store went away"):
        write_export(rows(), tmp_path / f"x.{fmt}", fmt, chunk_rows=2)
    assert list(tmp_path.iterdir()) == []
