"""Outside ``/api/v1``: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus text exposition)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .common import gateway_of, pool_of
from .responses import ok

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Process is up (touches neither the store nor the upstream)")
async def healthz() -> Response:
    return ok({"status": "ok"})


@router.get("/readyz", summary="Store and upstream ready; 503 when not (also while writes fail: disk full)")
async def readyz(request: Request) -> Response:
    checks: dict[str, bool | None] = {"store": False, "storage": False, "gateway": None}
    pool = pool_of(request)
    with contextlib.suppress(Exception):  # during a known outage: not ready at once (the store probes itself)
        checks["store"] = pool.availability.available and bool(await asyncio.wait_for(pool.ping(), 5.0))
    problem: str | None = "cannot check the storage"
    with contextlib.suppress(Exception):
        problem = await asyncio.wait_for(pool.storage_problem(), 5.0)
    checks["storage"] = problem is None
    gateway = gateway_of(request)
    reasons: dict[str, str] = {}
    if gateway is not None:
        checks["gateway"] = False
        with contextlib.suppress(Exception):
            checks["gateway"] = bool(await asyncio.wait_for(gateway.ready(), 5.0))
        for name, reason in gateway.readiness().items():  # e.g. --tokenizer loading: "tokenizer_error"
            checks[name] = reason is None
            if reason is not None:
                reasons[f"{name}_error"] = reason
    if not checks["store"]:  # why: the outage as the store saw it (PostgreSQL restarting, unreachable)
        reasons["store_error"] = pool_of(request).availability.reason or "the store did not answer"
    ready = all(v is not False for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks, **reasons}
    if problem is not None:
        body["storage_error"] = problem
    return ok(body, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    stats = await pool_of(request).stats()
    gateway = gateway_of(request)
    if gateway is not None:
        with contextlib.suppress(Exception):
            stats["gateway"] = gateway.stats()
    counts: Counter[int] = request.app.state.request_counts
    text = render_metrics(stats, counts)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


_LABELS = {"trajectories": "status", "groups": "status", "captures": "state", "tokens": "kind", "batches": "state",
           "continuity": "continuity"}


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None


def _fmt(v: float) -> str:
    return str(int(v)) if v.is_integer() else repr(v)


def _series(name: str, value: Any, lines: list[str]) -> None:
    """Numbers become ``steplake_<name>``; a dict of numbers becomes one labelled family."""
    metric = "steplake_" + "".join(c if c.isalnum() else "_" for c in name)
    v = _num(value)
    if v is not None:
        lines += [f"# TYPE {metric} gauge", f"{metric} {_fmt(v)}"]
        return
    if not isinstance(value, dict):
        return
    label = _LABELS.get(name, "key")
    rows = [(k, _num(x)) for k, x in value.items()]
    rows = [(k, x) for k, x in rows if x is not None]
    if rows:
        lines.append(f"# TYPE {metric} gauge")
        for k, x in rows:
            safe = str(k).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
            lines.append(f'{metric}{{{label}="{safe}"}} {_fmt(x)}')  # type: ignore[arg-type]
    for k, x in value.items():
        if isinstance(x, dict):
            _series(f"{name}_{k}", x, lines)


def render_metrics(stats: dict[str, Any], counts: Counter[int]) -> str:
    lines: list[str] = []
    for name, value in stats.items():
        _series(name, value, lines)
    lines.append("# TYPE steplake_http_requests_total counter")
    for status, n in sorted(counts.items()):
        lines.append(f'steplake_http_requests_total{{code="{status}"}} {n}')
    return "\n".join(lines) + "\n"
