"""Trajectory attribution: path, headers, automatic joining by history; normalization rules."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai

from steplake.gateway.attribution import exchange_hash, history_hashes
from tests.gateway.conftest import Harness

CHAT = "/v1/chat/completions"


async def turn(h: Harness, msgs: list[dict[str, Any]], path: str = CHAT, **headers: str) -> dict[str, Any]:
    r = await h.client.post(path, json={"model": "m", "messages": msgs}, headers=headers)
    assert r.status_code == 200, r.text
    msg: dict[str, Any] = r.json()["choices"][0]["message"]
    return {k: v for k, v in msg.items() if v is not None}


async def test_path_and_headers(harness: Harness) -> None:
    await turn(harness, [{"role": "user", "content": "a"}], "/t/traj-1/v1/chat/completions")
    await turn(harness, [{"role": "user", "content": "b"}], "/t/traj-2/g/grp-9/v1/chat/completions")
    await turn(harness, [{"role": "user", "content": "c"}], CHAT, **{
        "X-Steplake-Trajectory": "traj-3", "X-Steplake-Group": "grp-3", "X-Steplake-Group-Size": "4",
        "X-Steplake-Channel": "val", "X-Steplake-Metadata": '{"task": "t1", "ground_truth": "42"}'})
    steps = {s["trajectory_id"]: s for s in await harness.steps()}
    assert set(steps) == {"traj-1", "traj-2", "traj-3"}
    assert steps["traj-2"]["group_id"] == "grp-9"
    s3 = steps["traj-3"]
    assert s3["group_id"] == "grp-3" and s3["channel"] == "val" and s3["metadata"]["task"] == "t1"
    assert (await harness.pool.get_group("grp-3"))["size"] == 4
    assert s3["provenance"]["attribution"] == "header"


async def test_interleaved_unmodified_sdk_conversations(harness: Harness) -> None:
    """Two conversations from an unmodified OpenAI SDK client (no path, no headers), interleaved."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.app))
    client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="x", http_client=http)
    convs: list[list[dict[str, Any]]] = [[{"role": "user", "content": "alpha 1"}],
                                         [{"role": "system", "content": "sys"}, {"role": "user", "content": "beta 1"}]]
    for k in range(3):
        for c, conv in enumerate(convs):
            out = await client.chat.completions.create(model="m", messages=conv)  # type: ignore[arg-type]
            conv.append({"role": "assistant", "content": out.choices[0].message.content})
            conv.append({"role": "user", "content": f"{'ab'[c]} {k + 2}"})
    await http.aclose()
    steps = await harness.steps()
    trajs: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        trajs.setdefault(s["trajectory_id"], []).append(s)
    assert len(trajs) == 2
    for ss in trajs.values():
        ss.sort(key=lambda s: s["step_index"])
        assert [s["step_index"] for s in ss] == [0, 1, 2]
        assert [s["continuity"] for s in ss] == ["first", "clean", "clean"]
        assert [len(s["messages"]) for s in ss] in ([1, 3, 5], [2, 4, 6])
        assert [s["provenance"]["attribution"] for s in ss] == ["auto-new", "auto-join", "auto-join"]


async def test_join_uses_the_store_after_a_restart_of_the_index(harness: Harness) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "persist"}]
    a = await turn(harness, msgs)
    await harness.settle()
    harness.gw.index.forget((await harness.steps())[0]["trajectory_id"])
    assert len(harness.gw.index) == 0
    await turn(harness, [*msgs, a, {"role": "user", "content": "next"}])
    steps = await harness.steps()
    assert len({s["trajectory_id"] for s in steps}) == 1


async def test_edited_history_and_completed_trajectory_open_new_ones(harness: Harness) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "one"}]
    a = await turn(harness, msgs)
    await turn(harness, [*msgs, {"role": "assistant", "content": "something else"}, {"role": "user", "content": "2"}])
    tid = next(s["trajectory_id"] for s in await harness.steps() if len(s["messages"]) == 1)
    await harness.pool.complete_trajectory(tid)
    await turn(harness, [*msgs, a, {"role": "user", "content": "two"}])
    assert len({s["trajectory_id"] for s in await harness.steps()}) == 3


async def test_parallel_continuations_of_one_exchange_do_not_share_a_trajectory(harness: Harness) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "root"}]
    a = await turn(harness, msgs)
    await harness.settle()
    nxt = [*msgs, a, {"role": "user", "content": "branch"}]
    await asyncio.gather(turn(harness, nxt), turn(harness, nxt))
    trajs = [s["trajectory_id"] for s in await harness.steps()]
    assert len(set(trajs)) == 2


def test_normalization_matches_resent_history() -> None:
    answered = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "f", "arguments": '{"b": 1,  "a": [1, 2]}'}}]}]
    resent = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
              {"role": "assistant", "content": "", "tool_calls": [
                  {"id": "other", "type": "function", "function": {"name": "f", "arguments": '{"a":[1,2],"b":1}'}}]},
              {"role": "tool", "tool_call_id": "other", "content": "3"}]
    assert history_hashes(resent) == [exchange_hash(answered)]
    assert exchange_hash([{"role": "developer", "content": "x"}]) == exchange_hash([{"role": "system", "content": "x"}])
    assert exchange_hash([{"role": "user", "content": "x"}]) != exchange_hash([{"role": "user", "content": "y"}])
