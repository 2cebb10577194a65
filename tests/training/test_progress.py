"""The training loop's output: the progress line of a version, reward statistics by policy version (standard
errors, the difference of two means) and the PNG plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from steplake.training.progress import (
    Rollout,
    VersionLine,
    batch_rollouts,
    by_version,
    compare,
    plot_rewards,
    reward_stats,
)


def batch(rewards: list[float], versions: list[int], tokens: int = 5) -> dict[str, object]:
    trajs = [{"trajectory_id": f"t{i}", "reward": r, "advantage": 0.0,
              "steps": [{"policy_version": v, "response_ids": list(range(tokens))}]}
             for i, (r, v) in enumerate(zip(rewards, versions, strict=True))]
    return {"batch_id": "b", "groups": [{"group_id": "g", "trajectories": trajs}]}


def test_progress_line_of_a_version() -> None:
    line = VersionLine()
    line.start(3)
    rollouts = batch_rollouts(batch([1.0, 0.0, 1.0, 1.0], [3, 3, 2, 3]))
    assert [r.version for r in rollouts] == [3, 3, 2, 3] and all(r.tokens == 5 for r in rollouts)
    line.add(rollouts, 3, {"loss": -0.25})
    text = line.finish(4, publish_s=2.0)
    assert text.startswith("policy v4 | reward 0.750 ± 0.433 over 4 samples of v2-v3 | staleness ≤ 1 |"), text
    assert "tok/s | loss -0.2500 | 1 batch in" in text and "publish 2.0 s" in text


def test_reward_by_version_and_the_difference_in_standard_errors() -> None:
    rollouts = [Rollout(f"a{i}", 0, float(i % 4 == 0), 3) for i in range(40)]  # 10/40 = 0.25
    rollouts += [Rollout(f"b{i}", 5, float(i % 4 != 0), 3) for i in range(40)]  # 0.75
    rollouts.append(Rollout("none", 5, None, 3))
    stats = by_version(rollouts)
    assert list(stats) == [0, 5] and stats[0].n == 40 and stats[5].n == 40
    assert stats[0].mean == pytest.approx(0.25) and stats[5].mean == pytest.approx(0.75)
    se = math.sqrt(0.25 * 0.75 / 39)  # sample std / sqrt(n)
    assert stats[0].se == pytest.approx(se)
    diff, diff_se = compare(stats[0], stats[5])
    assert diff == pytest.approx(0.5) and diff_se == pytest.approx(math.sqrt(2) * se)
    assert math.isnan(reward_stats([1.0]).se) and reward_stats([]).n == 0


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    stats = by_version([Rollout(f"t{v}{i}", v, float(i < v), 3) for v in range(4) for i in range(4)])
    out = plot_rewards(stats, tmp_path / "reward_by_version.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
