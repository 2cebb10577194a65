"""The seams between the parts: wired by ``create_app`` through constructors and typed methods, one error
tree, one ``Json``, one trajectory filter (issue 13, fault 3)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import pytest

from steplake.config import build_settings
from steplake.errors import (
    FilterError,
    JudgeError,
    SteplakeError,
    UpstreamError,
    UpstreamFailure,
    ValidationError,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "steplake"


def test_upstream_failures_and_judge_errors_are_steplake_errors() -> None:
    e = UpstreamFailure(429, "slow down", body={"error": {"message": "slow down"}}, retryable=True)
    assert isinstance(e, UpstreamError) and isinstance(e, SteplakeError)
    assert (e.status, e.message, e.code, e.retryable, str(e)) == (429, "slow down", "upstream_429", True, "slow down")
    assert UpstreamFailure(504, "late").code == "upstream_timeout"
    assert UpstreamFailure(503, "none ready").to_openai()["error"]["code"] == "not_ready"
    assert issubclass(JudgeError, SteplakeError) and str(JudgeError("judge unreachable")) == "judge unreachable"
    assert issubclass(FilterError, ValidationError) and FilterError("x").status == 422
    from steplake.rewards.judge import JudgeError as FromJudge
    from steplake.upstreams import UpstreamFailure as FromUpstreams

    assert FromJudge is JudgeError and FromUpstreams is UpstreamFailure


def test_create_app_wires_parts_at_construction(tmp_path: Path) -> None:
    from steplake.app import create_app
    from steplake.store.sqlite import SqliteStore

    rewards = {"channels": {"train": {"functions": [{"name": "exact_match", "weight": 0.5}]}}}
    settings = build_settings({"db": str(tmp_path / "pool.db"), "upstream": ["http://127.0.0.1:9/"],
                               "rewards": rewards})
    app = create_app(settings)
    gw, pool, store = app.state.gateway, app.state.pool, app.state.store
    assert gw.auth is app.state.auth  # given to the gateway's constructor
    assert isinstance(store, SqliteStore) and store.reward_weights == {"exact_match": 0.5}  # to the store's
    # LLM judges use the gateway's upstream, known before anything starts (it was set once the gateway ran)
    assert pool.reward_env().llm_base_url == "http://127.0.0.1:9/v1"
    assert create_app(settings, gateway=False).state.pool.reward_env().llm_base_url is None


async def test_the_rewarder_reads_its_env_when_a_function_runs(tmp_path: Path) -> None:
    from steplake.pool.pool import Pool
    from steplake.rewards import RewardEnv
    from steplake.store.sqlite import SqliteStore

    url = {"now": "http://a/v1"}
    pool = Pool(SqliteStore(tmp_path / "pool.db"), rewards={"channels": {"train": {"functions": [
        {"name": "exact_match"}]}}}, reward_env=lambda: RewardEnv(llm_base_url=url["now"]))
    await pool.start()
    try:
        assert pool.rewarder.env.llm_base_url == "http://a/v1"
        url["now"] = "http://b/v1"
        assert pool.rewarder.env.llm_base_url == "http://b/v1"
    finally:
        await pool.stop()


def test_commit_hook_is_a_store_method(store: Any) -> None:
    woke = threading.Event()
    store.set_commit_hook(woke.set)
    from steplake.records import Step

    store.submit_steps([Step(step_id="s", trajectory_id="t", step_index=0, prompt_ids=[1], response_ids=[2])])
    assert woke.wait(5.0), "the hook did not run after the group commit"
    store.set_commit_hook(None)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_open_store_passes_reward_weights_to_the_constructor(backend: str, tmp_path: Path) -> None:
    from steplake.store import open_store

    db = str(tmp_path / "p.db") if backend == "sqlite" else "postgresql://u:p@127.0.0.1:1/none"
    rewards = {"channels": {"c": {"functions": [{"name": "judge", "component": "j", "weight": 0}]}}}
    s = open_store(db, build_settings({"db": db, "rewards": rewards}))  # not opened: no database needed
    assert getattr(s, "reward_weights") == {"j": 0.0}  # noqa: B009


def test_json_is_declared_once() -> None:
    """``Json = dict[str, Any]`` lives in steplake/types.py; every other module imports it."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "Json" for t in node.targets)
                    and isinstance(node.value, ast.Subscript)):
                found.append(path.relative_to(SRC).as_posix())
    assert found == ["types.py"]


def test_outgoing_records_have_the_documented_shapes(store: Any) -> None:
    """Every key a store answers is declared in its TypedDict of steplake.types (both backends)."""
    from steplake.records import Step
    from steplake.types import EventOut, GroupOut, PolicyOut, StepOut, TrajectoryOut

    store.create_group("g", 2, "train", {"task": "x"}, ["t", "u"])
    store.append_steps([Step(step_id="s", trajectory_id="t", step_index=0, prompt_ids=[1], response_ids=[2],
                             messages=[{"role": "user", "content": "hi"}], response={"content": "yo"},
                             sampling={"temperature": 1.0}, usage={"total_tokens": 2}, metadata={"a": 1})])
    store.complete_trajectory("t", 1.0)
    store.publish_policy(1, "/w", "n")
    step, traj = store.get_step("s"), store.get_trajectory("t")
    for record, shape in ((step, StepOut), (traj, TrajectoryOut), (traj["steps"][0], StepOut),
                          (store.get_group("g"), GroupOut), (store.get_policy(), PolicyOut)):
        assert set(record) <= set(shape.__annotations__), set(record) - set(shape.__annotations__)
        assert shape.__required_keys__ <= set(record)
    assert set(store.get_trajectory("t", with_steps=False)) == set(TrajectoryOut.__annotations__) - {"steps"}
    assert set(store.get_group("g")) == set(GroupOut.__annotations__)
    assert all(set(e) == set(EventOut.__annotations__) for e in store.read_events(0))
