"""``steplake train``: the reference GRPO trainer as a command (flags = the fields of ``TrainConfig``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..client import DEFAULT_URL


@click.command("train")
@click.option("--url", default=DEFAULT_URL, show_default=True, envvar="STEPLAKE_URL", help="steplake server.")
@click.option("--api-key", default=None, envvar="STEPLAKE_API_KEY", help="A trainer (or admin) key.")
@click.option("--out-dir", default="steplake-weights", show_default=True, type=click.Path(file_okay=False),
              help="Versioned weight folders (v000001, ...); must lie under the server's --weights-root.")
@click.option("--model", default=None, help="Start from these weights (.gguf or save_pretrained folder) "
                                            "[default: the embedded SmolLM2 GGUF; on resume: the last version].")
@click.option("--channel", default="train", show_default=True)
@click.option("--groups", type=click.IntRange(1, 1024), default=2, show_default=True, help="Groups per batch.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-5, show_default=True,
              help="AdamW lr (steplake demo --train uses 5e-5).")
@click.option("--clip-eps", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--save-every", type=click.IntRange(1), default=1, show_default=True,
              help="Optimizer steps per published version (a batch whose advantages are all 0 takes none).")
@click.option("--keep", type=click.IntRange(1), default=3, show_default=True, help="Published folders kept.")
@click.option("--max-staleness", type=click.IntRange(0), default=1, show_default=True,
              help="Batch filter: skip rollouts sampled more than this many versions ago.")
@click.option("--lease-seconds", type=click.FloatRange(1), default=300.0, show_default=True,
              help="An unacked batch is served again after this.")
@click.option("--idle-timeout", type=click.FloatRange(0), default=120.0, show_default=True,
              help="Stop when no group became ready for this many seconds.")
@click.option("--max-versions", type=click.IntRange(1), default=None, help="Stop after publishing this many.")
@click.option("--max-batches", type=click.IntRange(1), default=None, help="Stop after this many batches.")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop at the first publish after this many minutes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of the reward by policy version (from the pool) here at the end.")
def train(plot: str | None, **opts: Any) -> None:
    """Train on the pool's GRPO batches and publish each new policy (the server reloads its upstreams).

    Resumes from the pool's current version when --out-dir holds its checkpoint."""
    from .trainer import TrainConfig, Trainer

    cfg = TrainConfig(**opts)
    from ..client import Client

    with Client(cfg.url, cfg.api_key) as client:
        trainer = Trainer(cfg, client=client, log=click.echo,
                          on_batch=lambda b: click.echo(f"batch {b['batch_id']}: groups "
                                                       + " ".join(g["group_id"] for g in b["groups"])))
        trainer.setup()
        click.echo(f"training from policy version {trainer.version} on {cfg.url} (channel {cfg.channel}, "
                   f"{cfg.groups} groups a batch, a version every {cfg.save_every} batches, max staleness "
                   f"{cfg.max_staleness}); weights in {trainer.ckpt.root}")
        last = trainer.run()
        click.echo(f"stopped at policy version {last} after {trainer.batches} batches")
        if plot:
            from .progress import by_version, plot_rewards, pool_rollouts

            click.echo(f"plot: {plot_rewards(by_version(pool_rollouts(client, cfg.channel)), Path(plot))}")





def train_demo_options(fn: Any) -> Any:
    """The ``--train`` flags of ``steplake demo``."""
    for opt in reversed([
        click.option("--train", "train_loop", is_flag=True,
                     help="Run the closed loop instead: agents sample, `steplake train` learns and publishes, the "
                          "model reloads (see README, Training loop). In this mode --tasks is the groups per "
                          "batch [2], --rollouts per group [6], --max-tokens [16]."),
        click.option("--minutes", type=click.FloatRange(0, min_open=True), default=15.0, show_default=True,
                     help="--train: train this long."),
        click.option("--versions", type=click.IntRange(1), default=None, help="--train: stop after this many."),
        click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="--train: AdamW lr."),
        click.option("--seed", type=int, default=0, show_default=True, help="--train: tasks and sampling seed."),
        click.option("--eval-groups", type=click.IntRange(1), default=None,
                     help="--train: groups of the evaluation before and after training."),
    ]):
        fn = opt(fn)
    return fn


def run_train_demo_cmd(settings: Any, tasks: int, rollouts: int, max_tokens: int, opts: dict[str, Any]) -> None:
    """``steplake demo --train``; the demo's own defaults (4 tasks, 4 rollouts, 48 tokens) give way to the
    loop's unless the flags were given."""
    from .loop import LoopConfig, run_train_demo

    ctx = click.get_current_context()
    given = {n for n in ("tasks", "rollouts", "max_tokens")
             if ctx.get_parameter_source(n) not in (click.core.ParameterSource.DEFAULT, None)}
    cfg = LoopConfig(minutes=opts["minutes"], versions=opts["versions"], seed=opts["seed"])
    if "tasks" in given:
        cfg.groups = tasks
    if "rollouts" in given:
        cfg.rollouts = rollouts
    if "max_tokens" in given:
        cfg.max_tokens = max_tokens
    if opts["lr"] is not None:
        cfg.lr = opts["lr"]
    if opts["eval_groups"] is not None:
        cfg.eval_groups = opts["eval_groups"]
    run_train_demo(settings, cfg)
__all__ = ["train", "train_demo_options", "run_train_demo_cmd"]
