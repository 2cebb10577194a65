"""``POST /api/v1/rewards/run`` on the in-process app with rewards configured in Settings: background
scoring, then re-runs with new versions that keep the old values; clear 400s otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from click.testing import CliRunner

from steplake.cli import cli
from steplake.client import AsyncClient
from tests.api.servers import asgi_client, make_app, threaded_server

REWARDS = {"channels": {"train": {"functions": [{"name": "final_answer", "version": "1"}]}}}


def answer(tid: str, text: str) -> dict[str, object]:
    return {"step_id": f"{tid}-0", "trajectory_id": tid, "step_index": 0, "prompt_ids": [1, 2, 3],
            "response_ids": [4, 5], "messages": [{"role": "user", "content": "What is 6*7?"}],
            "response": {"content": text}, "finish_reason": "stop", "metadata": {"ground_truth": "42"}}


async def make_pair(http: httpx.AsyncClient) -> None:
    for tid in ("a", "b"):
        r = await http.post("/api/v1/trajectories", json={"trajectory_id": tid, "group_id": "G", "group_size": 2})
        assert r.status_code == 201, r.text
    r = await http.post("/api/v1/steps", json={"steps": [answer("a", "Answer: 42"), answer("b", "Answer: 41")]})
    assert r.status_code == 200, r.text
    for tid in ("a", "b"):
        assert (await http.post(f"/api/v1/trajectories/{tid}/complete", json={})).status_code == 200


async def versions(http: httpx.AsyncClient, tid: str) -> list[tuple[str, float]]:
    items = (await http.get("/api/v1/rewards", params={"trajectory_id": tid})).json()["items"]
    return [(r["version"], r["value"]) for r in items]


async def test_rerun_with_new_versions_keeps_old_values(tmp_path: Path) -> None:
    app = make_app(tmp_path, rewards=REWARDS)
    async with asgi_client(app) as http:
        await make_pair(http)
        for _ in range(200):  # scored in the background on completion
            if all([await versions(http, t) for t in ("a", "b")]):
                break
            await asyncio.sleep(0.05)
        assert await versions(http, "a") == [("1", 1.0)] and await versions(http, "b") == [("1", 0.0)]
        r = await http.post("/api/v1/rewards/run", json={"trajectory_ids": ["a", "b"], "version": "2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scored"] == 2 and {x["version"] for x in body["rewards"]} == {"2"}
        client = AsyncClient("http://testserver", transport=httpx.ASGITransport(app=app))
        ans = await client.run_rewards(filter={"channel": "train"}, version="3")
        assert ans["scored"] == 2 and ans["trajectories"] == 2
        assert await versions(http, "b") == [("1", 0.0), ("2", 0.0), ("3", 0.0)]
        t = (await http.get("/api/v1/trajectories/a")).json()
        assert t["reward"] == 1.0 and t["reward_components"]["final_answer"]["version"] == "3"
        for bad, code in (({}, "missing_target"), ({"filter": {"colour": "red"}}, "export_error"),
                          ({"filter": {"trainable_only": True}}, "bad_filter")):
            r = await http.post("/api/v1/rewards/run", json=bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (bad, r.text)
        assert (await http.post("/api/v1/rewards/run", json={"trajectory_ids": ["nope"]})).status_code == 404
        assert (await http.post("/api/v1/rewards/run", json={"trajectory_ids": "a"})).status_code == 422


async def test_no_rewards_configured_is_a_clear_400(tmp_path: Path) -> None:
    async with asgi_client(make_app(tmp_path)) as http:
        r = await http.post("/api/v1/rewards/run", json={"trajectory_ids": ["a"]})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "no_rewards" and "rewards" in r.json()["error"]["message"]


def test_cli_rewards_run(tmp_path: Path) -> None:
    with threaded_server(tmp_path, rewards=REWARDS) as (url, _app):
        with httpx.Client(base_url=url) as http:
            for tid in ("a", "b"):
                http.post("/api/v1/trajectories", json={"trajectory_id": tid, "group_id": "G", "group_size": 2})
            http.post("/api/v1/steps", json={"steps": [answer("a", "Answer: 42"), answer("b", "Answer: 41")]})
            for tid in ("a", "b"):
                http.post(f"/api/v1/trajectories/{tid}/complete", json={})
        r = CliRunner().invoke(cli, ["rewards", "run", "--url", url, "--trajectory-id", "a", "--version", "9"],
                               env={"STEPLAKE_API_KEY": None})
        assert r.exit_code == 0, r.output
        assert "scored: 1 value on 1 trajectory" in r.output and "a\tfinal_answer\t9\t1.0" in r.output
        r = CliRunner().invoke(cli, ["rewards", "run", "--url", url])
        assert r.exit_code == 2 and "give --trajectory-id" in r.output
