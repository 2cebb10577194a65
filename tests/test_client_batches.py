"""Client.iter_batches against a real server: ack after each loop body, never when it raises."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steplake.client import Client
from tests.conftest import free_port
from tests.reliability.test_kill9 import start


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc: subprocess.Popen[bytes] = start(tmp_path / "pool.db", port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def ready_group(c: Client, name: str, rewards: list[float]) -> None:
    g = c.create_group(len(rewards), group_id=name)
    for t, r in zip(g["trajectories"], rewards, strict=True):
        tid = t["trajectory_id"]
        c.submit_steps([{"trajectory_id": tid, "step_index": 0, "prompt_ids": [1, 2, 3], "response_ids": [4, 2],
                         "response_logprobs": [-0.5, -0.1]}])
        c.complete(tid, reward=r)


def test_iter_batches_acks_after_each_step_and_not_on_error(server: str) -> None:
    c = Client(server)
    ready_group(c, "g1", [1.0, 0.0])
    ready_group(c, "g2", [0.0, 1.0])
    seen = []
    for batch in c.iter_batches(recipe="grpo", groups=1, idle_timeout=0.5, wait_seconds=0.1, tensors="numpy"):
        assert batch["tensors"]["advantages"].shape[0] == 2
        seen.append(batch["groups"][0]["group_id"])
    assert sorted(seen) == ["g1", "g2"]
    assert {c.get_group(g)["status"] for g in seen} == {"consumed"}

    ready_group(c, "g3", [1.0, 0.0])
    with pytest.raises(RuntimeError):
        for _ in c.iter_batches(recipe="grpo", groups=1, idle_timeout=0.5, wait_seconds=0.1):
            raise RuntimeError("the optimizer step failed")
    assert c.get_group("g3")["status"] == "leased"  # not acked: served again after its lease
    c.close()
