"""The dashboard: a static single-page app (HTML, vanilla JS modules, CSS; no build step) served at ``/``,
plus a few read helpers under ``/api/v1/dashboard/...`` (overview aggregates, decoded tokens, curation of
everything matching a list filter). Every other call of the page goes to the public ``/api/v1`` API.

Use ``app.include_router(steplake.dashboard.router)`` or ``mount_dashboard(app, settings)``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .routes import router


def mount_dashboard(app: FastAPI, settings: Any = None) -> None:
    """Add the dashboard's routes to ``app`` (the app factory's hook)."""
    if not getattr(app.state, "dashboard_mounted", False):
        app.include_router(router)
        app.state.dashboard_mounted = True


__all__ = ["router", "mount_dashboard"]
