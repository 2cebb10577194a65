"""Versioned weight folders of ``steplake train``: ``<out>/v000003/`` holds a full Hugging Face folder
(``save_pretrained``: what the embedded model and SGLang/vLLM reload), ``trainer.json`` (the version, the
batches trained so far, the settings that shaped the optimizer) and, in the newest published folder only,
``optimizer.pt`` (the AdamW state: twice the weights, so older folders drop it).

A folder is written under a temporary name and renamed when complete, so a crash never leaves a half
folder under a version's name. The trainer keeps the last ``keep`` published folders and never deletes the
one the server serves.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainingError

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer.json"
PREFIX = "v"


def version_dir(root: Path, version: int) -> Path:
    return root / f"{PREFIX}{version:06d}"


def version_of(path: Path) -> int | None:
    """The version a folder name stands for (``v000003`` → 3), None for anything else."""
    name = path.name
    if not name.startswith(PREFIX) or not name[len(PREFIX):].isdigit():
        return None
    return int(name[len(PREFIX):])


@dataclass(frozen=True)
class Checkpoint:
    version: int
    path: Path
    state: dict[str, Any]

    @property
    def optimizer_path(self) -> Path | None:
        p = self.path / OPTIMIZER_FILE
        return p if p.is_file() else None


class CheckpointDir:
    """The folder of one trainer's versions (created when missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[int]:
        found = (version_of(p) for p in self.root.iterdir() if p.is_dir() and (p / STATE_FILE).is_file())
        return sorted(v for v in found if v is not None)

    def get(self, version: int) -> Checkpoint | None:
        path = version_dir(self.root, version)
        try:
            state = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return Checkpoint(version, path, state)

    def save(self, version: int, model: Any, optimizer: Any, state: dict[str, Any]) -> Path:
        """Write the weights, the optimizer state and ``state`` as version ``version``; returns the folder.
        An existing folder of that version (a publish that was not recorded) is replaced."""
        import torch

        final = version_dir(self.root, version)
        tmp = self.root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(str(tmp), safe_serialization=True)
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            (tmp / STATE_FILE).write_text(json.dumps({**state, "version": version}, indent=1))
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise TrainingError(f"could not write the weights of version {version} to {tmp}: {e}") from e
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def discard(self, version: int) -> None:
        """Remove a version's folder (its publish was refused: it never served)."""
        shutil.rmtree(version_dir(self.root, version), ignore_errors=True)

    def prune(self, published: int, keep: int) -> list[int]:
        """After ``published`` was recorded: keep the ``keep`` newest versions up to it (it included), drop
        the optimizer state of all but it, and remove folders of versions above it (never published).
        Returns the versions removed."""
        removed = []
        kept = [v for v in self.versions() if v <= published][-max(1, keep):]
        for v in self.versions():
            path = version_dir(self.root, v)
            if v not in kept:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(v)
            elif v != published:
                (path / OPTIMIZER_FILE).unlink(missing_ok=True)
        return removed


__all__ = ["Checkpoint", "CheckpointDir", "version_dir", "version_of", "OPTIMIZER_FILE", "STATE_FILE"]
