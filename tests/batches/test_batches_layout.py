"""Step and trajectory layouts: loss masks, logprob alignment, reward placement, fallbacks."""

from __future__ import annotations

import pytest

from steplake.batches import (
    BatchError,
    ContinuityMismatchError,
    apply_recipe,
    layout_summary,
    row_meta,
    to_rows,
    to_step_rows,
    to_trajectory_rows,
)
from tests.batches.batches_pool import clean_three_step_trajectory, single_step_group, step, trajectory


def test_trajectory_row_masks_exactly_the_sampled_tokens() -> None:
    batch = {"groups": [{"group_id": "g", "trajectories": [clean_three_step_trajectory(reward=1.0)]}]}
    rows, summary = to_trajectory_rows(batch)
    assert summary == {"trajectory_rows": 1, "fallback_step_rows": 0, "fallback_trajectories": 0}
    (row,) = rows
    assert row["layout"] == "trajectory" and row["step_ids"] == ["c-s0", "c-s1", "c-s2"]
    assert row["prompt_ids"] == [1, 2, 3]
    # everything after the first prompt: model 10 11 | tool 20 21 | model 12 13 14 | user 30 | model 15
    assert row["response_ids"] == [10, 11, 20, 21, 12, 13, 14, 30, 15]
    assert row["response_mask"] == [1, 1, 0, 0, 1, 1, 1, 0, 1]
    assert row["response_logprobs"] == [-1.0, -2.0, 0.0, 0.0, -3.0, -4.0, -5.0, 0.0, -6.0]
    # step 1's reward on its last token (14), the trajectory reward on the last token (15)
    assert row["token_level_rewards"] == [0, 0, 0, 0, 0, 0, 0.25, 0, 1.0]
    assert (row["reward"], row["continuity"], row["policy_version"]) == (1.0, "clean", 1)


def test_trajectory_row_carries_the_recipe_advantage() -> None:
    other = trajectory("o", 0.0, [step("o0", "o", 0, [1, 2, 3], [16])])
    res = apply_recipe("grpo", [{"group_id": "g", "trajectories": [clean_three_step_trajectory(), other]}])
    rows, _ = to_trajectory_rows(res.groups)
    # [1, 0]: A = ±0.5 / (sqrt(0.5) + 1e-6)
    assert [r["advantage"] for r in rows] == pytest.approx([0.7071058, -0.7071058], abs=1e-6)
    assert rows[1]["response_mask"] == [1] and rows[1]["token_level_rewards"] == [0.0]


def test_step_rows() -> None:
    traj = clean_three_step_trajectory(reward=1.0)
    traj["steps"] = traj["steps"][::-1]  # rows follow step_index, not list order
    rows = to_step_rows([{"group_id": "g", "trajectories": [traj]}])
    assert [r["step_id"] for r in rows] == ["c-s0", "c-s1", "c-s2"]
    assert rows[1]["prompt_ids"] == [1, 2, 3, 10, 11, 20, 21] and rows[1]["response_ids"] == [12, 13, 14]
    assert [r["response_mask"] for r in rows] == [[1, 1], [1, 1, 1], [1]]
    assert [r["token_level_rewards"] for r in rows] == [[0.0, 0.0], [0.0, 0.0, 0.25], [1.0]]
    assert rows[2]["response_logprobs"] == [-6.0]
    assert {r["layout"] for r in rows} == {"step"} and rows[0]["step_index"] == 0


def test_fork_falls_back_to_step_rows() -> None:
    forked = trajectory(
        "f",
        0.5,
        [
            step("f0", "f", 0, [1, 2], [7, 8]),
            step("f1", "f", 1, [1, 2, 99, 20], [9], continuity="fork"),  # thinking dropped: 7 8 missing
        ],
    )
    batch = {"groups": [{"group_id": "g", "trajectories": [clean_three_step_trajectory(), forked]}]}
    rows, summary = to_trajectory_rows(batch)
    assert summary == {"trajectory_rows": 1, "fallback_step_rows": 2, "fallback_trajectories": 1}
    assert [(r["layout"], r["step_id"]) for r in rows] == [
        ("trajectory", None),
        ("step", "f0"),
        ("step", "f1"),
    ]
    assert rows[2]["token_level_rewards"] == [0.5]


def test_realigned_falls_back_too() -> None:
    t = trajectory(
        "r",
        1.0,
        [step("r0", "r", 0, [1], [2, 3]), step("r1", "r", 1, [1, 2, 4], [5], continuity="realigned")],
    )
    assert to_trajectory_rows([{"group_id": "g", "trajectories": [t]}])[1]["fallback_trajectories"] == 1


def test_false_clean_claim_is_an_error() -> None:
    t = trajectory("x", 1.0, [step("x0", "x", 0, [1], [2, 3]), step("x1", "x", 1, [1, 2, 4, 5], [6])])
    with pytest.raises(ContinuityMismatchError, match="'x1' of trajectory 'x' claims clean"):
        to_trajectory_rows([{"group_id": "g", "trajectories": [t]}])


def test_unset_continuity_is_checked_here() -> None:
    good = trajectory(
        "u",
        1.0,
        [step("u0", "u", 0, [1], [2], continuity=None), step("u1", "u", 1, [1, 2, 3], [4], continuity=None)],
    )
    bad = trajectory(
        "v",
        1.0,
        [step("v0", "v", 0, [1], [2], continuity=None), step("v1", "v", 1, [9, 2], [4], continuity=None)],
    )
    rows, summary = to_trajectory_rows([{"group_id": "g", "trajectories": [good, bad]}])
    assert summary == {"trajectory_rows": 1, "fallback_step_rows": 2, "fallback_trajectories": 1}
    assert rows[0]["response_ids"] == [2, 3, 4] and rows[0]["response_mask"] == [1, 0, 1]


def test_missing_logprobs_and_bad_lengths() -> None:
    t = clean_three_step_trajectory()
    t["steps"][1]["response_logprobs"] = None
    rows, _ = to_trajectory_rows([{"group_id": "g", "trajectories": [t]}])
    assert rows[0]["response_logprobs"] is None
    t["steps"][1]["response_logprobs"] = [-1.0]
    with pytest.raises(BatchError, match="response_logprobs length 1 != response_ids length 3"):
        to_step_rows([{"group_id": "g", "trajectories": [t]}])


def test_to_rows_and_meta() -> None:
    batch = {"groups": [single_step_group("g", [1, 0]), single_step_group("h", [1])]}
    rows, summary = to_rows(batch, "step")
    assert summary == {"step_rows": 3}
    meta = row_meta(rows)
    assert list(meta["uid"]) == ["g", "g", "h"]
    assert list(meta["trajectory_id"]) == ["g-t0", "g-t1", "h-t0"]
    assert meta["step_ids"][0] == ["g-t0-s0"] and meta["uid"].dtype == object
    with pytest.raises(BatchError, match="unknown layout"):
        to_rows(batch, "tokens")


def test_advantage_on_the_trajectory_only() -> None:
    t = clean_three_step_trajectory()
    t["advantage"] = 0.75  # e.g. a server that sets it on trajectories only
    assert {r["advantage"] for r in to_step_rows([{"group_id": "g", "trajectories": [t]}])} == {0.75}
    assert to_trajectory_rows([{"group_id": "g", "trajectories": [t]}])[0][0]["advantage"] == 0.75


def test_layout_summary_matches_rows_and_never_raises() -> None:
    forked = trajectory(
        "f", 0.5, [step("f0", "f", 0, [1, 2], [7, 8]), step("f1", "f", 1, [5], [9], continuity="fork")]
    )
    groups = [{"group_id": "g", "trajectories": [clean_three_step_trajectory(), forked]}]
    assert layout_summary(groups) == to_trajectory_rows(groups)[1]
    liar = trajectory("x", 1.0, [step("x0", "x", 0, [1], [2, 3]), step("x1", "x", 1, [1, 2, 4, 5], [6])])
    assert layout_summary({"groups": [{"group_id": "g", "trajectories": [liar]}]}) == {
        "trajectory_rows": 0,
        "fallback_step_rows": 2,
        "fallback_trajectories": 1,
        "continuity_mismatch": 1,
    }
