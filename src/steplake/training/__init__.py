"""The reference training loop over a steplake pool: ``steplake train`` (trainer.py), its versioned weight
folders (checkpoints.py), progress lines and the reward-by-version plot (progress.py), and ``steplake demo
--train``, the closed loop on the embedded model (loop.py)."""

from __future__ import annotations

__all__: list[str] = []
