"""The HTTP API under ``/api/v1`` plus ``/healthz``, ``/readyz`` and ``/metrics``: thin routes over the Pool."""

from __future__ import annotations

from fastapi import APIRouter

from . import admin, audit, batches, curation, exports, ops, rewards_run, sse, steps, trajectories


def api_routers() -> list[APIRouter]:
    return [ops.router, steps.router, trajectories.router, curation.router, batches.router, admin.router,
            sse.router, exports.router, rewards_run.router, audit.router]


__all__ = ["api_routers"]
