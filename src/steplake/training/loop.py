"""``steplake demo --train``: the closed loop on one CPU — agents → pool → GRPO → new policy served → better
agents.

It starts ``steplake serve`` (the embedded SmolLM2-135M model as upstream, ``--prompt-mode tokens``, a
``--weights-root`` for the trainer's folders), then:

1. evaluation at version 0: ``eval_groups`` groups of the task on channel ``eval`` (never trained on);
2. training: agents written with the ``openai`` SDK keep sampling groups on channel ``train`` while
   :class:`~steplake.training.trainer.Trainer` trains on GRPO batches and publishes a version per batch,
   until ``minutes`` have passed (or ``versions`` were published);
3. evaluation at the last version: the same ``eval`` questions again;
4. the reward of each version (train rollouts by the version that sampled them), the two evaluations with
   their standard errors, and ``reward_by_version.png`` next to the database.

The task: single-digit addition (``"7 + 5"``, the system prompt asks for the result only), reward 1 when the
last number of the answer is the sum (the ``final_answer`` rule, scored by the agent, see ``score``). The
model starts near 0.1-0.2 (it often rambles) and can only be rewarded by answering correctly, so the reward is
not about format alone.
"""

from __future__ import annotations

import functools
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import Client
from ..config import Settings
from ..rewards.answers import answers_match, extract_answer
from .progress import RewardStats, by_version, compare, plot_rewards, pool_rollouts, reward_stats
from .trainer import TrainConfig, Trainer

SYSTEM = "You are a calculator. Reply with the result only."
say = functools.partial(print, flush=True)
REWARDS: dict[str, Any] = {"channels": {}}  # the agents score their own answers (``score``) when they complete


def score(answer: str, truth: str) -> float:
    """The pool's ``final_answer`` rule with ``extract: last_number``: 1.0 when the last number of the answer is
    the ground truth. Computed by the agent and sent with ``complete``: a group is ready (and may be batched)
    as soon as its last trajectory completes, before background rewards would have landed."""
    found = extract_answer(answer, "last_number")
    return 1.0 if found is not None and answers_match(found.text, truth)[0] else 0.0


def make_task(rng: random.Random) -> dict[str, str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return {"question": f"{a} + {b}", "ground_truth": str(a + b)}


def ask(base_url: str, task: dict[str, str], max_tokens: int, seed: int) -> str:
    """One rollout: an agent written with the openai SDK, one chat call."""
    from openai import OpenAI

    client: Any = OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=600)
    out = client.chat.completions.create(
        model="smollm2", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": task["question"]}],
        max_tokens=max_tokens, temperature=1.0, seed=seed)
    return str(out.choices[0].message.content or "")


@dataclass
class LoopConfig:
    minutes: float = 15.0
    versions: int | None = None
    groups: int = 2  # groups per batch
    rollouts: int = 6  # per group
    max_tokens: int = 16
    eval_groups: int = 4
    lr: float = 5e-5
    max_staleness: int = 1
    seed: int = 0
    agents: int = 4  # concurrent agent threads


@dataclass
class Rollouts:
    """Agents sampling groups on a channel, in threads, until stopped (or ``limit`` groups are done)."""

    client: Client
    cfg: LoopConfig
    channel: str
    rng: random.Random
    ahead: Callable[[], bool] = lambda: True  # may a new group start?
    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    errors: int = 0

    def group(self, task: dict[str, str], seed: int) -> None:
        g = self.client.create_group(self.cfg.rollouts, channel=self.channel,
                                     metadata={"task": task["question"], "ground_truth": task["ground_truth"],
                                               "agent": "openai-sdk"})

        def one(k_t: tuple[int, dict[str, Any]]) -> None:
            k, t = k_t
            try:
                answer = ask(t["base_url"], task, self.cfg.max_tokens, seed + k)
            except Exception:  # an agent failure is data too: the trajectory completes with reward 0
                answer = ""
                self.errors += 1
            self.client.complete(t["trajectory_id"], reward=score(answer, task["ground_truth"]))
        with ThreadPoolExecutor(self.cfg.agents) as ex:
            list(ex.map(one, enumerate(g["trajectories"])))
        self.done += 1

    def run(self, limit: int | None = None, tasks: list[dict[str, str]] | None = None) -> None:
        i = 0
        while not self.stop.is_set() and (limit is None or i < limit):
            if not self.ahead():
                time.sleep(0.2)
                continue
            task = tasks[i % len(tasks)] if tasks else make_task(self.rng)
            self.group(task, seed=self.cfg.seed * 100_000 + 100 * i)
            i += 1


def evaluate(client: Client, cfg: LoopConfig, tasks: list[dict[str, str]], channel: str) -> RewardStats:
    roll = Rollouts(client, cfg, channel, random.Random(cfg.seed))
    roll.run(limit=len(tasks), tasks=tasks)
    return reward_stats(t["reward"] for t in client.iter_trajectories(channel=channel) if t.get("reward") is not None)


@dataclass
class LoopResult:
    versions: dict[int, RewardStats]
    eval_first: RewardStats
    eval_last: RewardStats
    last_version: int
    minutes: float
    plot: Path


def run_loop(url: str, weights_dir: Path, plot_path: Path, cfg: LoopConfig,
             log: Callable[[str], None] = say) -> LoopResult:
    """Evaluate, train while agents sample, evaluate again; see the module docstring."""
    t0 = time.monotonic()
    client = Client(url, timeout=600)
    eval_tasks = [make_task(random.Random(10_000 + cfg.seed + i)) for i in range(cfg.eval_groups)]
    log(f"evaluating version 0: {cfg.eval_groups} groups x {cfg.rollouts} rollouts on channel eval-0 ...")
    first = evaluate(client, cfg, eval_tasks, "eval-0")
    log(f"version 0: reward {first.mean:.3f} ± {first.se:.3f} (SE, n {first.n})")
    consumed = [0]
    roll = Rollouts(client, cfg, "train", random.Random(cfg.seed),
                    ahead=lambda: roll.done - consumed[0] < 2 * cfg.groups)
    agents = threading.Thread(target=roll.run, name="steplake-agents", daemon=True)
    deadline = time.monotonic() + cfg.minutes * 60

    def on_batch(batch: dict[str, Any]) -> None:
        consumed[0] += len(batch["groups"])

    def on_published(version: int, path: Path, trained: Any) -> None:
        if time.monotonic() >= deadline or (cfg.versions is not None and version >= cfg.versions):
            roll.stop.set()

    tcfg = TrainConfig(out_dir=str(weights_dir), url=url, groups=cfg.groups, lr=cfg.lr, save_every=1, keep=2,
                       max_staleness=cfg.max_staleness, max_versions=cfg.versions, seed=cfg.seed, idle_timeout=300)
    trainer = Trainer(tcfg, client=client, log=log, on_batch=on_batch, on_published=on_published)
    trainer.setup()
    agents.start()
    log(f"training for {cfg.minutes:g} min: {cfg.groups} groups x {cfg.rollouts} rollouts a batch, a version a batch")
    trainer.stop_when = roll.stop.is_set
    last = trainer.run()
    roll.stop.set()
    agents.join()
    log(f"evaluating version {last} on channel eval-{last} ...")
    final = evaluate(client, cfg, eval_tasks, f"eval-{last}")
    versions = by_version(pool_rollouts(client, "train"))
    plot = plot_rewards(versions, plot_path, title=f"steplake demo --train: a + b, seed {cfg.seed}",
                        evals={0: first, last: final})
    client.close()
    return LoopResult(versions, first, final, last, (time.monotonic() - t0) / 60, plot)


def report(result: LoopResult, log: Callable[[str], None] = say) -> None:
    log("version  n    reward mean ± std")
    for v, s in result.versions.items():
        log(f"{v:>7}  {s.n:<4} {s.mean:.3f} ± {s.std:.3f}")
    a, b = result.eval_first, result.eval_last
    diff, se = compare(a, b)
    log(f"evaluation: version 0 {a.mean:.3f} ± {a.se:.3f} (n {a.n}) -> version {result.last_version} "
        f"{b.mean:.3f} ± {b.se:.3f} (n {b.n}); difference {diff:+.3f} ± {se:.3f} SE ({diff / se if se else 0:.1f} SE)")
    log(f"{result.minutes:.1f} min; plot {result.plot}")


def run_train_demo(settings: Settings, cfg: LoopConfig) -> LoopResult:
    """``steplake demo --train``: start the server (demo.start_server) and run the loop."""
    from rich.console import Console

    from ..demo import start_server, stop_server

    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="steplake-train-"))
    if settings.db == Settings.model_fields["db"].default:
        settings = settings.model_copy(update={"db": str(workdir / "train.db")})
    weights = Path(settings.weights_root) if settings.weights_root else workdir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(settings, workdir, console, rewards=REWARDS,
                             extra_args=("--weights-root", str(weights)))
    console.print(f"steplake serve is up at {url}; database {settings.db}; log {workdir / 'server.log'}",
                  soft_wrap=True, markup=False, highlight=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated loop stops its server too
    try:
        plot = Path(settings.db).resolve().parent / "reward_by_version.png"
        result = run_loop(url, weights, plot, cfg)
        report(result)
        return result
    finally:
        stop_server(proc)


__all__ = ["LoopConfig", "LoopResult", "run_loop", "run_train_demo", "report", "make_task", "score", "REWARDS", "SYSTEM"]
