"""``steplake train``: the reference GRPO trainer over a steplake pool (CPU, full fine-tune).

Loop: ``Client.iter_batches`` (recipe ``grpo``, filter ``max_staleness``) → ``tensorize`` → the clipped loss of
:func:`steplake.train.grpo_loss` (logprobs recomputed by the policy; ratios against the sampling logprobs the
gateway captured) → gradient clipping → AdamW step. Every ``save_every`` batches the weights are written as a
full Hugging Face folder (``training/checkpoints.py``) and published with ``POST /api/v1/policy
{version, weights_path}``: the gateway pauses new upstream calls, lets those in flight finish on the old
weights, reloads every reloadable upstream and records the version only if all of them loaded it. A publish
the server refuses raises :class:`~steplake.errors.TrainingError` (the old weights keep serving, the version
is not recorded, its folder is removed). A batch is acked when the next one is asked for, after its step (and
its publish): a trainer killed mid-batch leaves the batch leased and the pool serves it again after
``lease_seconds``.

Resume: a trainer started against a pool whose policy is version ``V > 0`` loads ``<out>/v{V}`` (weights and
optimizer state) and goes on with ``V + 1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..client import DEFAULT_URL, Client
from ..errors import PolicyReloadError, SteplakeError, TrainingError
from .checkpoints import Checkpoint, CheckpointDir
from .progress import VersionLine, batch_rollouts

Hook = Callable[..., None]


@dataclass
class TrainConfig:
    """Every knob of ``steplake train`` (each is a CLI flag)."""

    out_dir: str = "steplake-weights"
    url: str = DEFAULT_URL
    api_key: str | None = None
    channel: str = "train"
    model: str | None = None  # .gguf or save_pretrained folder; default: the embedded model's GGUF
    groups: int = 2  # groups per batch
    lr: float = 1e-5
    clip_eps: float = 0.2
    max_grad_norm: float = 1.0
    save_every: int = 1  # optimizer steps per published version (a batch of zero advantages takes none)
    keep: int = 3  # newest published folders kept
    max_staleness: int | None = 1
    lease_seconds: float = 300.0
    wait_seconds: float = 10.0
    idle_timeout: float | None = 120.0
    max_versions: int | None = None  # stop after publishing this many versions
    max_batches: int | None = None
    max_minutes: float | None = None  # stop at the first publish after this many minutes
    seed: int = 0
    threads: int | None = None


@dataclass
class TrainedBatch:
    """What one optimizer step saw (handed to the hooks and kept in ``Trainer.history``)."""

    batch: dict[str, Any]
    version: int  # the policy served while it was trained on
    metrics: dict[str, float]
    tensors: dict[str, Any] = field(repr=False, default_factory=dict)


def load_policy(path: str | None) -> Any:
    """A trainable float32 causal LM from a ``.gguf`` file or a weights folder (default: the embedded GGUF)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if path is None:
        try:
            from ..model.engine import find_default_gguf
        except ImportError as e:
            raise TrainingError(f"no --model given and the embedded model is not installed: {e}") from None
        p = find_default_gguf()
    else:
        p = Path(path)
    auto: Any = AutoModelForCausalLM
    model: Any
    try:
        if p.is_dir():
            model = auto.from_pretrained(str(p), dtype=torch.float32, local_files_only=True)
        else:
            model = auto.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32, local_files_only=True)
            model.hf_quantizer = None  # dequantized to float32: save_pretrained writes plain weights
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
    except (OSError, ValueError) as e:
        raise TrainingError(f"cannot load the policy from {p}: {e}") from e
    return model.to("cpu")


class Trainer:
    """One training run; ``run()`` returns the last published version. Hooks (all optional):
    ``on_batch(batch)`` when a batch arrives (before its step), ``on_trained(TrainedBatch)`` after the
    optimizer step and before any publish, ``on_published(version, path, TrainedBatch)`` after a publish."""

    def __init__(self, config: TrainConfig, *, client: Client | None = None, log: Callable[[str], None] = print,
                 on_batch: Hook | None = None, on_trained: Hook | None = None,
                 on_published: Hook | None = None) -> None:
        self.cfg = config
        self.client = client or Client(config.url, config.api_key)
        self.log = log
        self.hooks = {"batch": on_batch, "trained": on_trained, "published": on_published}
        self.ckpt = CheckpointDir(config.out_dir)
        self.history: list[TrainedBatch] = []
        self.version = 0
        self.batches = 0
        self.pending = 0  # optimizer steps since the last publish
        self.model: Any = None
        self.optimizer: Any = None
        self.line = VersionLine()
        self.stop_when: Callable[[], bool] | None = None  # checked after each publish: True stops the run

    # -- setup -----------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the policy and optimizer: from the checkpoint of the pool's current version when it is above
        0 (resume), else from ``model``."""
        import torch

        torch.manual_seed(self.cfg.seed)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.version = int(self.client.get_policy().get("version") or 0)
        resume = self._resume_point()
        self.model = load_policy(str(resume.path) if resume else self.cfg.model)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=0.0)
        if resume is not None:
            if resume.optimizer_path is not None:
                self.optimizer.load_state_dict(torch.load(resume.optimizer_path, weights_only=True))
            self.batches = int(resume.state.get("batches") or 0)
            self.log(f"resumed from version {self.version} ({resume.path}, {self.batches} batches trained"
                     f"{'' if resume.optimizer_path else ', no optimizer state'})")

    def _resume_point(self) -> Checkpoint | None:
        if self.version == 0:
            return None
        found = self.ckpt.get(self.version)
        if found is None and self.cfg.model is None:
            raise TrainingError(f"the pool's policy is version {self.version} but {self.ckpt.root} holds no "
                                f"checkpoint of it; pass --out-dir of the trainer that published it, or --model "
                                f"to start from given weights")
        return found

    # -- loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        if self.model is None:
            self.setup()
        from ..batches import tensorize

        filters = {"max_staleness": self.cfg.max_staleness} if self.cfg.max_staleness is not None else None
        pad = int(getattr(self.model.config, "pad_token_id", None) or 0)
        published, started = 0, time.monotonic()
        self.line.start(self.version)
        batches = self.client.iter_batches(
            channel=self.cfg.channel, groups=self.cfg.groups, recipe="grpo", filters=filters,
            lease_seconds=self.cfg.lease_seconds, wait_seconds=self.cfg.wait_seconds,
            idle_timeout=self.cfg.idle_timeout, max_batches=self.cfg.max_batches)
        for batch in batches:
            self._hook("batch", batch)
            tensors = tensorize(batch, backend="torch", pad_token_id=pad)
            trained = TrainedBatch(batch, self.version, self.step(tensors), tensors)
            self.history.append(trained)
            self.batches += 1
            self.line.add(batch_rollouts(batch), self.version, trained.metrics)
            self._hook("trained", trained)
            self.pending += 0 if trained.metrics.get("skipped") else 1
            if self.pending >= self.cfg.save_every:  # a batch without any nonzero advantage changes nothing
                self.publish(trained)
                published += 1
                if self._done(published, started):
                    self.client.ack(batch["batch_id"])  # the iterator acks only when asked for the next
                    break
        return self.version

    def _done(self, published: int, started: float) -> bool:
        c = self.cfg
        return ((c.max_versions is not None and published >= c.max_versions)
                or (c.max_minutes is not None and time.monotonic() - started >= c.max_minutes * 60)
                or (self.stop_when is not None and self.stop_when()))

    def step(self, tensors: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on a batch's tensors (skipped when no row has a nonzero advantage)."""
        import torch

        from ..train import grpo_loss

        self.model.train()
        if not bool((tensors["advantages"] * tensors["response_mask"]).abs().sum() > 0):
            return {"skipped": 1.0, "n_tokens": float(tensors["response_mask"].sum())}
        loss, metrics = grpo_loss(self.model, tensors, clip_eps=self.cfg.clip_eps)
        loss.backward()  # type: ignore[no-untyped-call]
        params = [p for p in self.model.parameters() if p.requires_grad]
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def publish(self, trained: TrainedBatch | None = None) -> None:
        """Save the weights as the next version and publish them; raises TrainingError when refused."""
        version = self.version + 1
        state = {"batches": self.batches, "config": asdict(self.cfg), "saved_at": time.time()}
        t0 = time.monotonic()
        path = self.ckpt.save(version, self.model, self.optimizer, state)
        try:
            self.client.publish_policy(version, weights_path=str(path), note=f"steplake train: {self.batches} batches")
        except PolicyReloadError as e:
            self.ckpt.discard(version)
            raise TrainingError(f"the server refused version {version} ({e.message}); it keeps serving version "
                                f"{self.version}, nothing was recorded", details=e.details) from e
        except SteplakeError as e:
            self.ckpt.discard(version)
            raise TrainingError(f"publishing version {version} failed: {e.message}; the server keeps serving "
                                f"version {self.version}") from e
        self.ckpt.prune(version, self.cfg.keep)
        self.pending = 0
        self.log(self.line.finish(version, publish_s=time.monotonic() - t0))
        self.version = version
        self.line.start(version)
        self._hook("published", version, path, trained)

    def _hook(self, name: str, *args: Any) -> None:
        hook = self.hooks[name]
        if hook is not None:
            hook(*args)


__all__ = ["TrainConfig", "Trainer", "TrainedBatch", "load_policy"]
