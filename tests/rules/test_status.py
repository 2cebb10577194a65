"""rules.status: step admission, the idle rule, status deltas and group readiness (CONTRACT §3)."""

from __future__ import annotations

import pytest

from steplake.errors import ConflictError
from steplake.records import Step
from steplake.rules.status import (
    check_step_fits,
    completed_at,
    group_ready,
    group_status_after,
    idle_cutoff,
    idle_outcome,
    status_deltas,
)


def step(**kw: object) -> Step:
    return Step(trajectory_id="t", prompt_ids=[1], response_ids=[2], **kw)  # type: ignore[arg-type]


def test_idle_rule() -> None:
    assert idle_outcome("stop", 0) == "complete"
    assert idle_outcome("stop", None) == "complete"
    assert idle_outcome("stop", 1) == "abandoned"  # stopped on tool calls: the agent never came back
    assert idle_outcome("length", 0) == "abandoned"
    assert idle_outcome(None, None) == "abandoned"
    assert idle_cutoff(1000.0, 300.0) == 700.0


def test_step_admission_and_reopen() -> None:
    assert check_step_fits(step(), "open", "t", "default") is False
    assert check_step_fits(step(), "abandoned", "t", "default") is True
    with pytest.raises(ConflictError) as e:
        check_step_fits(step(), "complete", "t", "default")
    assert e.value.code == "trajectory_complete"
    with pytest.raises(ConflictError) as e:
        check_step_fits(step(group_id="other"), "open", "t", "default")
    assert e.value.code == "group_mismatch"
    with pytest.raises(ConflictError) as e:
        check_step_fits(step(channel="eval"), "open", "t", "default")
    assert e.value.code == "channel_mismatch"


def test_status_deltas_and_completed_at() -> None:
    assert status_deltas("open", "complete") == (1, 0)
    assert status_deltas("open", "abandoned") == (0, 1)
    assert status_deltas("abandoned", "open") == (0, -1)
    assert status_deltas("abandoned", "complete") == (1, -1)
    assert status_deltas("open", "open") == (0, 0)
    assert completed_at("complete", 5.0) == 5.0 and completed_at("abandoned", 5.0) == 5.0
    assert completed_at("open", 5.0) is None


def test_group_readiness() -> None:
    assert group_ready(3, 2, 1) and group_ready(1, 1, 0)
    assert not group_ready(3, 0, 3)  # all abandoned: nothing to train on
    assert not group_ready(3, 2, 0)
    assert group_status_after("collecting", 2, 1, 1) == "ready"
    assert group_status_after("collecting", 2, 1, 0) == "collecting"
    assert group_status_after("ready", 3, 1, 1) == "collecting"  # the group grew
    assert group_status_after("ready", 2, 2, 0) == "ready"
    assert group_status_after("leased", 3, 0, 0) == "leased"  # a lease or consumption is never undone here
    assert group_status_after("consumed", 3, 0, 0) == "consumed"
