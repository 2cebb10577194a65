"""Background rewards on a real pool: scored on completion, re-run with a new version keeps both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from steplake.pool.pool import Pool
from steplake.records import BatchIn, Step
from tests.conftest import BACKENDS, make_store


def answer_step(tid: str, text: str, truth: str) -> Step:
    return Step(step_id=f"{tid}-0", trajectory_id=tid, group_id="G", step_index=0, prompt_ids=[1, 2, 3],
                response_ids=[4, 5], messages=[{"role": "user", "content": "What is 6*7?"}],
                response={"content": text}, finish_reason="stop", metadata={"ground_truth": truth})


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rewards_run_in_background_and_rerun_keeps_versions(tmp_path: Path, backend: str) -> None:
    config = {"channels": {"train": {"functions": [{"name": "final_answer", "version": "1"}]}}}
    pool = Pool(make_store(backend, tmp_path), rewards=config)
    await pool.start()
    try:
        await pool.create_trajectory("a", "G", 2)
        await pool.create_trajectory("b", "G", 2)
        await pool.append_steps([answer_step("a", "6*7 = 42. Answer: 42", "42"),
                                 answer_step("b", "Answer: 41", "42")])
        await pool.complete_trajectory("a")
        await pool.complete_trajectory("b")

        async def scored() -> bool:
            ts = [await pool.find_trajectory(t) for t in ("a", "b")]
            return all(t and t["reward"] is not None for t in ts)
        await wait_for(scored)
        a, b = await pool.find_trajectory("a"), await pool.find_trajectory("b")
        assert a and b and (a["reward"], b["reward"]) == (1.0, 0.0)
        assert a["reward_components"]["final_answer"]["version"] == "1"

        # the configuration moves to version 2 (say: a new tolerance); re-run keeps version 1's values
        pool.rewarder.spec.channels["train"].functions[0].version = "2"
        pool.rewarder.spec.channels["train"].functions[0].params = {"abs_tol": 2.0}
        await pool.run_rewards(["a", "b"])
        rewards = await pool._run(pool.store.list_rewards, "b")
        assert [(r["version"], r["value"]) for r in rewards] == [("1", 0.0), ("2", 1.0)]
        b = await pool.find_trajectory("b")
        assert b and b["reward"] == 1.0 and b["reward_components"]["final_answer"]["version"] == "2"
        ans = await pool.fetch_batch(BatchIn(groups=1, recipe="grpo", dry_run=True))
        assert ans["summary"]["reward_versions"] == {"final_answer": ["2"]}
    finally:
        await pool.stop()


CALLS: dict[str, int] = {}


def counting_reward(ctx) -> float:  # type: ignore[no-untyped-def]
    CALLS[ctx.trajectory_id] = CALLS.get(ctx.trajectory_id, 0) + 1
    return 1.0


def second_store(backend: str, first: object, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Another store object on the same pool (what a second server opens)."""
    if backend == "sqlite":
        from steplake.store.sqlite import SqliteStore

        return SqliteStore(tmp_path / "pool.db")
    from steplake.store.postgres import PostgresStore

    return PostgresStore(first.url, schema=first.schema)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_servers_score_each_trajectory_once(tmp_path: Path, backend: str) -> None:
    """Two pools (two servers) with the same reward configuration on one database: each trajectory is scored
    once per function version (one call, one record); an explicit re-run with a new version still runs."""
    config = {"channels": {"train": {"functions": [
        {"name": "tests.pool.test_rewarder:counting_reward", "component": "count", "version": "1"}]}}}
    first = make_store(backend, tmp_path)
    pools = [Pool(first, rewards=config), Pool(second_store(backend, first, tmp_path), rewards=config)]
    for p in pools:
        await p.start()
    tids = [f"once-{backend}-{i}" for i in range(8)]
    try:
        for i, tid in enumerate(tids):
            pool = pools[i % 2]
            await pool.create_trajectory(tid)
            await pool.append_steps([answer_step(tid, "Answer: 42", "42").model_copy(update={"group_id": tid})])
            await pool.complete_trajectory(tid)

        async def all_scored() -> bool:
            found = [await pools[0].find_trajectory(x) for x in tids]
            return all(t is not None and t["reward"] is not None for t in found)
        await wait_for(all_scored)
        await asyncio.sleep(1.5)  # both followers have seen every completion by now
        assert {t: CALLS.get(t) for t in tids} == {t: 1 for t in tids}
        for tid in tids:
            records = await pools[1]._run(pools[1].store.list_rewards, tid)
            assert [(r["name"], r["version"]) for r in records] == [("count", "1")]
        assert sum(p.rewarder.stats()["claimed_elsewhere"] for p in pools) >= len(tids)

        rerun = await pools[1].run_rewards([tids[0]], version="2")
        assert [r["version"] for r in rerun] == ["2"] and CALLS[tids[0]] == 2
    finally:
        for p in pools:
            await p.stop()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_secret_in_records_events_or_logs(tmp_path: Path, backend: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """An HTTP reward model and a judge configured with keys and headers (both echo the Authorization header
    they got back): the stored records, the event feed and the log carry none of the configured secrets."""
    from tests.scale.restart_kit import SECRETS, answer_step, fake_scorers, reward_config

    caplog.set_level("DEBUG")
    with fake_scorers() as scorers:
        pool = Pool(make_store(backend, tmp_path), rewards=reward_config(scorers.url)["rewards"])
        await pool.start()
        try:
            await pool.create_trajectory("tr-s1")
            await pool.append_steps([Step(**answer_step("tr-s1"))])
            await pool.complete_trajectory("tr-s1")

            async def scored() -> bool:
                t = await pool.find_trajectory("tr-s1")
                return bool(t and {"rm", "judge"} <= set(t["reward_components"] or {}))
            await wait_for(scored)
            records = await pool._run(pool.store.list_rewards, "tr-s1")
            events = await pool.read_events(0, 1000)
        finally:
            await pool.stop()
    assert scorers.rm_calls["tr-s1"] == 1 and not scorers.bad_auth
    assert {r["details"]["function"] for r in records} == {"http_rm", "llm_judge"}
    assert all(len(r["details"]["config_sha256"]) == 64 and "params" not in r["details"] for r in records)
    assert "***" in str(records)  # the echoed header was there, masked
    for text in (str(records), str(events), caplog.text):
        assert not any(secret in text for secret in SECRETS)
