"""The HTTP API under ``/api/v1`` plus ``/healthz``, ``/readyz`` and ``/metrics``: thin routes over the Pool."""

from __future__ import annotations

from fastapi import APIRouter

from . import admin, batches, curation, ops, sse, steps, trajectories


def api_routers() -> list[APIRouter]:
    return [ops.router, steps.router, trajectories.router, curation.router, batches.router, admin.router,
            sse.router]


__all__ = ["api_routers"]
