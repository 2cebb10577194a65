"""Which trajectory a gateway call belongs to (rules in the package docstring).

Exchange hash: blake2b over the *normalized* chat messages of a call plus the assistant answer it got.
Normalization makes an agent's re-sent history equal to what the model answered: content strings and
lists of text parts compare equal, ``None`` and ``""`` content too, tool-call arguments compare as parsed
JSON with sorted keys, tool-call ids / names / reasoning / vendor fields are ignored, ``developer`` reads
as ``system``, Anthropic blocks are first converted to chat form.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.requests import Request

from ..errors import BadRequestError
from ..records import ID_RE, NAME_RE, json_problem
from ..types import Json

MAX_LOOKUPS = 4  # assistant-ending prefixes tried per request, longest first


_rng = random.Random()  # ids, not secrets; seeded from os.urandom, reseeded in forked children
os.register_at_fork(after_in_child=_rng.seed)


def new_hex() -> str:
    """128 random bits as 32 hex chars (cheaper than uuid4, which makes a syscall per id)."""
    return f"{_rng.getrandbits(128):032x}"


def new_trajectory_id() -> str:
    return "tr_" + new_hex()


def new_group_id() -> str:
    return "gr_" + new_hex()


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict):
                if "text" in p:
                    out.append(str(p["text"]))
                elif p.get("type") not in (None, "text"):
                    out.append(orjson.dumps(p, option=orjson.OPT_SORT_KEYS).decode())
        return "".join(out)
    return str(content)


def _args(a: Any) -> Any:
    if isinstance(a, str):
        try:
            return orjson.loads(a) if a.strip() else {}
        except orjson.JSONDecodeError:
            return a.strip()
    return a if a is not None else {}


def normalize_message(m: Json) -> list[Any]:
    role = m.get("role")
    if role == "developer":
        role = "system"
    out: list[Any] = [role, _text(m.get("content")).strip()]
    tcs = m.get("tool_calls")
    if tcs:
        calls = []
        for tc in tcs:
            fn = tc.get("function") if isinstance(tc, dict) else None
            fn = fn if isinstance(fn, dict) else {}
            calls.append([fn.get("name"), _args(fn.get("arguments"))])
        out.append(calls)
    return out


def exchange_hash(messages: list[Json]) -> str:
    norm = [normalize_message(m) for m in messages if isinstance(m, dict)]
    return hashlib.blake2b(orjson.dumps(norm, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def history_hashes(messages: list[Json], limit: int = MAX_LOOKUPS) -> list[str]:
    """Hashes of the prefixes of ``messages`` that end with an assistant message, longest first."""
    out: list[str] = []
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, dict) and m.get("role") == "assistant":
            out.append(exchange_hash(messages[: i + 1]))
            if len(out) >= limit:
                break
    return out


class ExchangeIndex:
    """In-memory map: last exchange hash of each recently captured trajectory → trajectory id.

    Captures may not be committed yet when the agent's next call arrives, so this is consulted before the
    store. A hash being continued by an in-flight call is *claimed*: a concurrent call with the same history
    (parallel rollouts from one prefix) opens a new trajectory instead of joining the same one.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._by_hash: OrderedDict[str, str] = OrderedDict()
        self._last: dict[str, str] = {}
        self._claimed: dict[str, str] = {}
        # hashes that stopped being a trajectory's last exchange here, maybe not yet in the store
        self._superseded: OrderedDict[str, str] = OrderedDict()

    def lookup(self, h: str) -> str | None:
        if h in self._claimed:
            return None
        return self._by_hash.get(h)

    def is_claimed(self, h: str) -> bool:
        return h in self._claimed

    def is_stale(self, h: str, tid: str) -> bool:
        """True when ``h`` was ``tid``'s last exchange but a newer one was captured here since."""
        return self._superseded.get(h) == tid

    def claim(self, h: str, tid: str) -> None:
        self._claimed[h] = tid

    def release(self, h: str | None) -> None:
        if h is not None:
            self._claimed.pop(h, None)

    def record(self, tid: str, h: str, claimed: str | None = None) -> None:
        self.release(claimed)
        old = self._last.pop(tid, None)
        if old is not None:
            self._by_hash.pop(old, None)
            self._superseded[old] = tid
            if len(self._superseded) > self.capacity:
                self._superseded.popitem(last=False)
        self._by_hash[h] = tid
        self._last[tid] = h
        while len(self._by_hash) > self.capacity:
            _, t = self._by_hash.popitem(last=False)
            self._last.pop(t, None)

    def forget(self, tid: str) -> None:
        h = self._last.pop(tid, None)
        if h is not None:
            self._by_hash.pop(h, None)

    def __len__(self) -> int:
        return len(self._by_hash)


class KeyBindings(Protocol):
    """What the gateway needs of ``steplake.api.auth.Auth``: the (cached) session binding of a call's key,
    and forgetting the cache when the gateway moves a session key to a new trajectory."""

    async def binding_of(self, headers: Mapping[str, str]) -> tuple[str, Json] | None: ...

    def invalidate(self) -> None: ...


@dataclass
class Attribution:
    trajectory_id: str
    source: str  # path | header | key | auto-join | auto-new
    group_id: str | None = None
    group_size: int | None = None
    channel: str | None = None
    metadata: Json = field(default_factory=dict)
    claimed_hash: str | None = None  # the exchange hash this call continues (auto-join)
    binding: Json | None = None  # the session the call's key is bound to, when known
    key_id: str | None = None  # ... and that key's id
    key_lookup: tuple[KeyBindings, Mapping[str, str]] | None = None  # where to find it (resolved by the gateway)

    @property
    def explicit(self) -> bool:
        return self.source in ("path", "header", "key")

    def bind(self, binding: Json) -> None:
        """Attribute to the key's session; group, channel and metadata headers win over the binding's."""
        self.trajectory_id, self.source = binding["trajectory_id"], "key"
        if self.group_id is None:
            self.group_id = binding.get("group_id")
        if self.channel is None:
            self.channel = binding.get("channel")
        if not self.metadata and binding.get("metadata"):
            self.metadata = dict(binding["metadata"])


def _id(value: str, what: str) -> str:
    if not ID_RE.match(value):
        raise BadRequestError(f"{what} {value!r} is not a valid id (1-128 chars: letters, digits, . _ : -)",
                              code="invalid_id")
    return value


def from_request(request: Request) -> Attribution:
    """Explicit attribution from the path (``/t/{tid}[/g/{gid}]``) and ``X-Steplake-*`` headers.

    Returns an Attribution whose ``trajectory_id`` is "" when the caller named none; then the call's key
    binding (or where to look it up) rides along for ``Gateway.resolve``.
    """
    h = request.headers
    tid = request.path_params.get("trajectory_id") or h.get("x-steplake-trajectory")
    source = "path" if request.path_params.get("trajectory_id") else ("header" if tid else "auto-new")
    gid = request.path_params.get("group_id") or h.get("x-steplake-group")
    att = Attribution(trajectory_id=_id(tid, "trajectory id") if tid else "", source=source,
                      group_id=_id(gid, "group id") if gid else None)
    ch = h.get("x-steplake-channel")
    if ch is not None:
        if not NAME_RE.match(ch):
            raise BadRequestError(f"X-Steplake-Channel {ch!r} is not a valid channel name", code="invalid_channel")
        att.channel = ch
    size = h.get("x-steplake-group-size")
    if size is not None:
        if not size.isdigit() or not 1 <= int(size) <= 100_000:
            raise BadRequestError("X-Steplake-Group-Size must be an integer from 1 to 100000",
                                  code="invalid_group_size")
        att.group_size = int(size)
    meta = h.get("x-steplake-metadata")
    if meta is not None:
        try:
            data = orjson.loads(meta)
        except orjson.JSONDecodeError:
            raise BadRequestError("X-Steplake-Metadata must be a JSON object", code="invalid_metadata") from None
        if not isinstance(data, dict):
            raise BadRequestError("X-Steplake-Metadata must be a JSON object", code="invalid_metadata")
        problem = json_problem(data, allow_nul=False)  # what the trajectory can store, on every backend
        if problem:
            raise BadRequestError(f"X-Steplake-Metadata: {problem}", code="invalid_metadata")
        att.metadata = data
    if not tid:
        _key_of(request, att)
    return att


def _key_of(request: Request, att: Attribution) -> None:
    """Where the call's key binding comes from: the principal the auth middleware identified (keys are
    required), else the app's ``Auth`` (an open server still recognises session keys)."""
    state = request.scope.get("state")
    principal = state.get("principal") if state else None
    if principal is not None:
        att.binding = getattr(principal, "binding", None)
        att.key_id = getattr(principal, "key_id", None)
        return
    app = request.scope.get("app")
    auth = getattr(app.state, "auth", None) if app is not None and hasattr(app, "state") else None
    if auth is not None:
        att.key_lookup = (auth, request.headers)


__all__ = ["Attribution", "ExchangeIndex", "KeyBindings", "exchange_hash", "history_hashes", "normalize_message",
           "from_request", "new_trajectory_id", "new_group_id"]
