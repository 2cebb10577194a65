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
