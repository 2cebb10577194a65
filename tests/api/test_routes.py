"""The /api/v1 routes in-process against a real SqliteStore: shapes of CONTRACT §2."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import step

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_trajectory_lifecycle(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/trajectories", json={"trajectory_id": "t1", "metadata": {"agent": "a1"}})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"trajectory_id", "group_id", "base_url", "anthropic_base_url"}
    assert body["base_url"] == "http://127.0.0.1:8000/t/t1/v1"
    assert body["anthropic_base_url"] == "http://127.0.0.1:8000/t/t1"

    steps = [step("t1", 0, [1, 2, 3], [4, 5], step_id="s0"), step("t1", 1, [1, 2, 3, 4, 5, 6], [7], step_id="s1")]
    r = await client.post("/api/v1/steps", json={"steps": steps})
    assert r.status_code == 200 and r.json()["accepted"] == 2

    t = (await client.get("/api/v1/trajectories/t1")).json()
    assert t["n_steps"] == 2 and t["status"] == "open"
    assert [s["continuity"] for s in t["steps"]] == ["first", "clean"]
    assert t["steps"][1]["prompt_ids"] == [1, 2, 3, 4, 5, 6]

    r = await client.post("/api/v1/trajectories/t1/complete", json={"reward": 1.0})
    assert r.status_code == 200 and r.json()["status"] == "complete"

    one = (await client.get("/api/v1/steps/s1")).json()
    assert one["response_ids"] == [7] and one["parent_step_id"] == "s0"
    meta = (await client.get("/api/v1/steps", params={"trajectory_id": "t1", "fields": "meta"})).json()
    assert len(meta["items"]) == 2 and "prompt_ids" not in meta["items"][0]
    assert meta["next_cursor"] is None

    r = await client.delete("/api/v1/trajectories/t1")
    assert r.status_code == 200
    assert (await client.get("/api/v1/trajectories/t1")).status_code == 404
    assert (await client.get("/api/v1/steps/s0")).status_code == 404


async def test_lists_paginate_and_filter(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.post("/api/v1/trajectories", json={"trajectory_id": f"p{i}", "channel": "val" if i % 2 else "train"})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/trajectories", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [t["trajectory_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    val = (await client.get("/api/v1/trajectories", params={"channel": "val"})).json()["items"]
    assert sorted(t["trajectory_id"] for t in val) == ["p1", "p3"]
    r = await client.get("/api/v1/trajectories", params={"limit": 1001})
    assert r.status_code == 422 and "limit" in r.json()["error"]["message"]


async def test_groups_batches_and_policy(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/groups", json={"n": 2, "group_id": "g1"})
    assert r.status_code == 201
    g = r.json()
    assert g["group_id"] == "g1" and len(g["trajectories"]) == 2
    tids = [t["trajectory_id"] for t in g["trajectories"]]
    assert g["trajectories"][0]["base_url"].endswith(f"/t/{tids[0]}/v1")
    for i, tid in enumerate(tids):
        await client.post("/api/v1/steps", json={"steps": [step(tid, 0, [1, 2], [3 + i])]})
        await client.post(f"/api/v1/trajectories/{tid}/complete", json={"reward": float(i)})
    assert (await client.get("/api/v1/groups/g1")).json()["status"] == "ready"
    groups = (await client.get("/api/v1/groups", params={"status": "ready"})).json()["items"]
    assert [x["group_id"] for x in groups] == ["g1"]

    preview = (await client.post("/api/v1/batches", json={"groups": 1, "recipe": "grpo", "dry_run": True})).json()
    assert preview["batch_id"] is None and len(preview["groups"]) == 1
    batch = (await client.post("/api/v1/batches", json={"groups": 1, "recipe": "grpo"})).json()
    assert batch["batch_id"] and len(batch["groups"][0]["trajectories"]) == 2
    advantages = sorted(t["advantage"] for t in batch["groups"][0]["trajectories"])
    assert advantages[0] < 0 < advantages[1]
    empty = (await client.post("/api/v1/batches", json={"groups": 1})).json()
    assert empty["groups"] == []
    assert (await client.post(f"/api/v1/batches/{batch['batch_id']}/ack")).status_code == 200
    assert (await client.get(f"/api/v1/batches/{batch['batch_id']}")).status_code == 200
    assert (await client.get("/api/v1/batches/nope")).status_code == 404

    p = (await client.post("/api/v1/policy", json={"version": 3, "note": "x"})).json()
    assert p["version"] == 3 and p["gateway"] is None
    r = await client.post("/api/v1/policy", json={"version": 2})
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
    assert (await client.get("/api/v1/policy")).json()["version"] == 3


async def test_rewards_curation_feedback(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/steps", json={"steps": [step("c1", 0, [1], [2], step_id="cs0")]})
    r = await client.post("/api/v1/rewards", json={"trajectory_id": "c1", "name": "judge", "value": 0.5})
    assert r.status_code == 200
    rewards = (await client.get("/api/v1/rewards", params={"trajectory_id": "c1"})).json()["items"]
    assert rewards and rewards[0]["name"] == "judge"
    r = await client.post("/api/v1/curation", json={"trajectory_ids": ["c1"], "quality": "bad", "reviewer": "me"})
    assert r.status_code == 200 and r.json()["updated"] == 1
    hist = (await client.get("/api/v1/curation/history", params={"target_id": "c1"})).json()["items"]
    assert hist and hist[-1]["reviewer"] == "me"
    bad = (await client.get("/api/v1/trajectories", params={"quality": "bad"})).json()["items"]
    assert [t["trajectory_id"] for t in bad] == ["c1"]
    r = await client.post("/api/v1/feedback", json={"step_id": "cs0", "kind": "thumbs", "value": "up"})
    assert r.status_code == 200
    fb = (await client.get("/api/v1/feedback", params={"step_id": "cs0"})).json()["items"]
    assert len(fb) == 1


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] is True
    await client.post("/api/v1/steps", json={"steps": [step("m1", 0, [1], [2])]})
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["steps"] == 1 and "captures" in stats and stats["gateway"] is None
    text = (await client.get("/metrics")).text
    assert "steplake_steps 1" in text
    assert 'steplake_trajectories{status="open"} 1' in text
    assert 'steplake_captures{state="pending"} 0' in text
    assert "steplake_http_requests_total" in text
    doc = (await client.get("/openapi.json")).json()
    assert "/api/v1/steps" in doc["paths"] and "StepsIn" in doc["components"]["schemas"]
    body = doc["paths"]["/api/v1/steps"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/StepsIn"
