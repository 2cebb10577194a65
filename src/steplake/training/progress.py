"""What a training loop shows: one progress line per published policy version, the reward of the rollouts
each version produced (read back from the pool), and a PNG plot of it.

A rollout's version is the policy version of its first step (the gateway tags a step with the version current
when its upstream call started). ``tokens/s`` on a progress line is the response tokens of the rollouts trained
on since the previous publish, over the wall-clock seconds since then: the sampling throughput the trainer saw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..types import Json


@dataclass(frozen=True)
class Rollout:
    trajectory_id: str
    version: int
    reward: float | None
    tokens: int  # response tokens sampled


@dataclass(frozen=True)
class RewardStats:
    n: int
    mean: float
    std: float  # population standard deviation

    @property
    def se(self) -> float:
        """Standard error of the mean (sample standard deviation / sqrt(n))."""
        if self.n < 2:
            return math.nan
        return self.std * math.sqrt(self.n / (self.n - 1)) / math.sqrt(self.n)


def reward_stats(rewards: Iterable[float]) -> RewardStats:
    values = list(rewards)
    if not values:
        return RewardStats(0, math.nan, math.nan)
    mean = sum(values) / len(values)
    return RewardStats(len(values), mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))


def batch_rollouts(batch: Json) -> list[Rollout]:
    """The rollouts of a batch answer (one per trajectory)."""
    out = []
    for group in batch.get("groups") or []:
        for t in group["trajectories"]:
            steps = t.get("steps") or []
            versions = [int(s.get("policy_version") or 0) for s in steps]
            out.append(Rollout(t["trajectory_id"], min(versions, default=0), t.get("reward"),
                               sum(len(s.get("response_ids") or []) for s in steps)))
    return out


@dataclass
class VersionLine:
    """Accumulates the batches trained between two publishes; ``finish`` renders the line."""

    started: float = 0.0
    served: int = 0
    rollouts: list[Rollout] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    batches: int = 0

    def start(self, version: int) -> None:
        self.started, self.served = time.monotonic(), version
        self.rollouts, self.staleness, self.losses, self.batches = [], [], [], 0

    def add(self, rollouts: Sequence[Rollout], version: int, metrics: dict[str, float]) -> None:
        self.rollouts.extend(rollouts)
        self.staleness.extend(version - r.version for r in rollouts)
        if "loss" in metrics:
            self.losses.append(metrics["loss"])
        self.batches += 1

    def finish(self, version: int, publish_s: float = 0.0) -> str:
        stats = reward_stats(r.reward for r in self.rollouts if r.reward is not None)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        tokens = sum(r.tokens for r in self.rollouts)
        made = sorted({r.version for r in self.rollouts})
        origin = f"v{made[0]}" if len(made) == 1 else f"v{made[0]}-v{made[-1]}" if made else "-"
        loss = f"{sum(self.losses) / len(self.losses):+.4f}" if self.losses else "skipped"
        stale = f"{max(self.staleness)}" if self.staleness else "-"
        return (f"policy v{version} | reward {stats.mean:.3f} ± {stats.std:.3f} over {stats.n} samples of {origin}"
                f" | staleness ≤ {stale} | {tokens / elapsed:.1f} tok/s | loss {loss} | {self.batches} batch"
                f"{'es' if self.batches != 1 else ''} in {elapsed:.1f} s, publish {publish_s:.1f} s")


def pool_rollouts(client: Any, channel: str = "train") -> list[Rollout]:
    """Every complete rollout of ``channel`` in the pool, with the version of its first step."""
    rewards = {t["trajectory_id"]: t.get("reward") for t in client.iter_trajectories(channel=channel)
               if t.get("status") == "complete"}
    first: dict[str, tuple[int, int]] = {}
    tokens: dict[str, int] = {}
    for s in client.iter_steps(channel=channel, fields="meta"):
        tid = s["trajectory_id"]
        usage = s.get("usage") or {}
        tokens[tid] = tokens.get(tid, 0) + int(usage.get("completion_tokens") or 0)
        if tid not in first or s["step_index"] < first[tid][0]:
            first[tid] = (int(s["step_index"]), int(s.get("policy_version") or 0))
    return [Rollout(tid, first[tid][1], r, tokens.get(tid, 0)) for tid, r in rewards.items() if tid in first]


def by_version(rollouts: Iterable[Rollout]) -> dict[int, RewardStats]:
    grouped: dict[int, list[float]] = {}
    for r in rollouts:
        if r.reward is not None:
            grouped.setdefault(r.version, []).append(r.reward)
    return {v: reward_stats(rs) for v, rs in sorted(grouped.items())}


def compare(first: RewardStats, last: RewardStats) -> tuple[float, float]:
    """The difference of two means and its standard error (independent samples)."""
    return last.mean - first.mean, math.sqrt(first.se ** 2 + last.se ** 2)


def plot_rewards(stats: dict[int, RewardStats], path: str | Path, title: str = "reward by policy version",
                 evals: dict[int, RewardStats] | None = None) -> Path:
    """A PNG of the mean reward (± one standard error) per policy version, with each version's sample count;
    ``evals`` (version → stats of a fixed evaluation set) are drawn as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = list(stats)
    means = [stats[v].mean for v in versions]
    errs = [0.0 if math.isnan(stats[v].se) else stats[v].se for v in versions]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.errorbar(versions, means, yerr=errs, marker="o", capsize=3, label="training rollouts")
    if evals:
        ev = list(evals)
        ax.errorbar(ev, [evals[v].mean for v in ev], yerr=[0.0 if math.isnan(evals[v].se) else evals[v].se for v in ev],
                    marker="s", linestyle="none", capsize=3, label="evaluation (fixed questions)")
        ax.legend(loc="upper left", fontsize=8)
    for v, m in zip(versions, means, strict=True):
        ax.annotate(f"n={stats[v].n}", (v, m), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    ax.set_xlabel("policy version (the weights that sampled the rollout)")
    ax.set_ylabel("mean reward (± 1 SE)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["Rollout", "RewardStats", "reward_stats", "batch_rollouts", "VersionLine", "pool_rollouts",
           "by_version", "compare", "plot_rewards"]
