"""The audit log over HTTP: ``AuditMiddleware`` records admin actions, ``GET /api/v1/audit`` lists them.

Recorded once an action succeeded (a 2xx answer), before the answer leaves, with the caller's key id (a
dashboard session: the key that signed it in; ``anonymous`` on a keyless server) and address:

======================================  ===================  ===============================================
request                                 action               target · summary
======================================  ===================  ===============================================
``POST /api/v1/keys``                   ``key.create``       new key id · scope, name, bound trajectory
``DELETE /api/v1/keys/{id}``            ``key.revoke``       key id
``POST /api/v1/session``                ``session.create``   key id · (dashboard sign-in; actor = that key)
``DELETE /api/v1/trajectories/{id}``    ``trajectory.delete`` trajectory id
``POST /api/v1/policy``                 ``policy.publish``   version · weights_path, note
``POST /api/v1/curation``               ``curation.update``  ids or filter · labels set, ``updated``
``POST /api/v1/rewards/run``            ``rewards.run``      · trajectories, scored, version
``POST /api/v1/exports``                ``export.create``    export id · format, recipe, steps
======================================  ===================  ===============================================

Failing to write an entry is logged and does not undo or fail the action. Entries are store rows
(:mod:`steplake.store.audit`); the pool's retention pruner and the CLI write theirs directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store.base import ACTIONS, Json, audit_entry
from .common import page_answer, pool_of
from .params import Cursor, Epoch, Limit

log = logging.getLogger("steplake.audit")
router = APIRouter(prefix="/api/v1", tags=["admin"])
MAX_REQUEST_BYTES = 1 << 20  # request bodies read for a summary (a curation's labels); larger ones: no details
MAX_IDS = 20  # ids listed in a curation summary

Describe = Callable[[re.Match[str], Json, Json], tuple[str | None, Json] | None]


def _loads(body: bytes) -> Json:
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _key_create(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    binding = resp.get("binding") if isinstance(resp.get("binding"), dict) else None
    summary: Json = {"scope": resp.get("scope"), "name": resp.get("name")}
    if binding:
        summary["trajectory_id"] = binding.get("trajectory_id")
    return resp.get("key_id"), summary


def _path_target(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    return unquote(m.group(1)), {}


def _session(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json] | None:
    return (resp["key_id"], {"scope": resp.get("scope")}) if resp.get("key_id") else None  # keyless: no sign-in


def _policy(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    version = resp.get("version", req.get("version"))
    return (None if version is None else str(version)), {"weights_path": resp.get("weights_path"),
                                                          "note": resp.get("note")}


def _obj(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _ids(values: Any) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list) else []


def _curation(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    summary: Json = {k: req[k] for k in ("quality", "trainable", "tags_add", "tags_remove", "note", "reviewer",
                                         "filter") if req.get(k) is not None}
    parts = []
    for kind, plural in (("step_ids", "steps"), ("trajectory_ids", "trajectories")):
        ids = _ids(req.get(kind))
        if ids:
            summary[kind] = ids[:MAX_IDS]
            summary[f"n_{kind}"] = len(ids)
            parts.append(ids[0] if len(ids) == 1 else f"{len(ids)} {plural}")
    if req.get("filter") is not None:
        parts.append("filter")
    summary["updated"] = resp.get("updated")
    return (", ".join(parts) or None), summary


def _rewards_run(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    ids = _ids(req.get("trajectory_ids"))
    summary: Json = {"trajectories": resp.get("trajectories"), "scored": resp.get("scored"),
                     "version": req.get("version"), "filter": req.get("filter")}
    if ids:
        summary["trajectory_ids"] = ids[:MAX_IDS]
    return None, summary


def _export(m: re.Match[str], req: Json, resp: Json) -> tuple[str | None, Json]:
    manifest = _obj(resp.get("manifest"))
    counts = _obj(manifest.get("counts"))
    return resp.get("export_id"), {"format": resp.get("format"), "recipe": manifest.get("recipe"),
                                   "from_manifest": req.get("from_manifest"), "steps": counts.get("steps")}


@dataclass(frozen=True)
class Rule:
    method: str
    path: re.Pattern[str]
    action: str
    describe: Describe
    reads_body: bool = False


RULES = (
    Rule("POST", re.compile(r"/api/v1/keys"), "key.create", _key_create),
    Rule("DELETE", re.compile(r"/api/v1/keys/([^/]+)"), "key.revoke", _path_target),
    Rule("POST", re.compile(r"/api/v1/session"), "session.create", _session),
    Rule("DELETE", re.compile(r"/api/v1/trajectories/([^/]+)"), "trajectory.delete", _path_target),
    Rule("POST", re.compile(r"/api/v1/policy"), "policy.publish", _policy, reads_body=True),
    Rule("POST", re.compile(r"/api/v1/curation"), "curation.update", _curation, reads_body=True),
    Rule("POST", re.compile(r"/api/v1/rewards/run"), "rewards.run", _rewards_run, reads_body=True),
    Rule("POST", re.compile(r"/api/v1/exports"), "export.create", _export, reads_body=True),
)


def rule_for(method: str, path: str) -> tuple[Rule, re.Match[str]] | None:
    if method not in ("POST", "DELETE") or not path.startswith("/api/v1/"):
        return None  # the gateway's calls and every read: nothing to look at
    for rule in RULES:
        if rule.method == method and (m := rule.path.fullmatch(path)) is not None:
            return rule, m
    return None


def who(scope: Scope, action: str, target: str | None) -> tuple[str, str]:
    """(actor, via) of a request: its key (or dashboard session), or ``anonymous`` on a keyless server."""
    principal = scope.get("state", {}).get("principal")
    if action == "session.create" and target:
        return target, "session"  # the key that just signed the dashboard in
    if principal is None:
        return "anonymous", "open"
    return str(principal.key_id), "session" if principal.via == "session" else "key"


class AuditSink(Protocol):
    """Where ``AuditMiddleware`` writes (the Pool)."""

    async def append_audit(self, entry: Json) -> Json: ...


class AuditMiddleware:
    """Pure ASGI, inside ``AuthMiddleware`` (it reads the ``Principal``). Only requests matching ``RULES``
    are buffered; everything else passes straight through."""

    def __init__(self, app: ASGIApp, audit: AuditSink) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = rule_for(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        rule, match = found
        request_body = bytearray()
        held: list[Message] = []
        buffering = False

        async def tee() -> Message:
            msg = await receive()
            if rule.reads_body and msg["type"] == "http.request" and len(request_body) <= MAX_REQUEST_BYTES:
                request_body.extend(msg.get("body", b""))
            return msg

        async def hold(msg: Message) -> None:
            nonlocal buffering
            if msg["type"] == "http.response.start":
                buffering = 200 <= msg["status"] < 300  # a refused or failed action: nothing to record
            if not buffering:
                await send(msg)
                return
            held.append(msg)
            if msg["type"] == "http.response.body" and not msg.get("more_body", False):
                buffering = False
                body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
                req = _loads(bytes(request_body)) if len(request_body) <= MAX_REQUEST_BYTES else {}
                await self._record(scope, rule, match, req, _loads(body))
                for m in held:
                    await send(m)

        await self.app(scope, tee, hold)

    async def _record(self, scope: Scope, rule: Rule, match: re.Match[str], req: Json, resp: Json) -> None:
        try:
            described = rule.describe(match, req, resp)
            if described is None:
                return
            target, summary = described
            actor, via = who(scope, rule.action, target)
            client = scope.get("client")
            entry = audit_entry(rule.action, actor=actor, via=via, target=target, summary=summary,
                                client=str(client[0]) if client else None)
            await self.audit.append_audit(entry)
        except Exception:  # the action happened: never fail it for its trace
            log.exception("could not record audit entry for %s %s", scope["method"], scope["path"])


Action = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$",
                                    description=f"One of: {', '.join(ACTIONS)}.")]
Actor = Annotated[str | None, Query(max_length=256, pattern=r"^[^\x00]*$",
                                   description="A key id, anonymous, cli or server.")]


@router.get("/audit", summary="The audit log (admin): key changes, deletions, prunes, policy publishes, "
                              "curation, reward runs, exports; newest first")
async def list_audit(request: Request, action: Action = None, actor: Actor = None, since: Epoch = None,
                     until: Epoch = None, cursor: Cursor = None, limit: Limit = 100) -> Response:
    filters = {k: v for k, v in {"action": action, "actor": actor, "since": since, "until": until}.items()
               if v is not None}
    page = await pool_of(request).list_audit(filters, cursor, limit)
    return page_answer(page)


__all__ = ["router", "AuditMiddleware", "RULES", "rule_for", "who"]
