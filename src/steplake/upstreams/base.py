"""Upstream inference servers: spec parsing, kinds and per-upstream state.

An upstream is given as ``--upstream URL`` (repeatable), optionally with a kind prefix:

==============  ==========================================================================================
prefix          what the gateway asks for and where it reads token ids
==============  ==========================================================================================
``vllm+``       ``return_token_ids: true`` + ``logprobs``; ``prompt_token_ids`` (top level or per choice)
                and per-choice ``token_ids``, streamed deltas too. Reloads weights through its developer
                routes (``VLLM_SERVER_DEV_MODE=1``): ``/collective_rpc`` ``reload_weights`` (gateway/reload.py).
``steplake+``   the embedded model server (``python -m steplake.model serve``): same wire as vLLM; can
                reload weights with ``POST /update_weights_from_disk``.
``sglang+``     ``return_token_ids`` + ``return_prompt_token_ids`` + ``logprobs``; reloads weights with
                ``POST /update_weights_from_disk``. (SGLang sends no ids when streaming chat: tokenizer
                fallback, flagged.)
``llamacpp+``   ``logprobs: true``; response ids from the non-standard ``id`` of each logprob entry;
                prompt ids from the local tokenizer (flagged).
``openai+``     a generic OpenAI-compatible server: nothing extra is asked; ids come from ``--tokenizer``
                (``token_source = "tokenizer"``) or are left empty (``"text"``).
==============  ==========================================================================================

Without a prefix the kind is detected once, at the first successful health check: vLLM is identified
positively (``GET /version`` answering ``{"version": "<x>"}`` and the model card of ``GET /v1/models``
saying ``owned_by: "vllm"``) → ``vllm``; ``GET /props`` answering → llama.cpp, ``GET /get_model_info`` →
SGLang; anything else → vLLM-style requests (our model server and most servers that accept unknown
fields), but not called vLLM. The identification runs for declared upstreams too: an identified vLLM sets
``extra["server"] = {"name": "vllm", "version": x}`` (``None`` when not identified), and each step's
``provenance.upstream_server`` (and ``server`` of the upstream in ``/api/v1/stats``) says ``"vllm <x>"``
(``null`` when not identified). The URL may end in ``/v1`` or not. An API key
for the upstream goes in the URL's user part (``openai+https://sk-...@api.openai.com/v1``); it is sent as
``Authorization: Bearer`` and never shown in stats. The agent's own key (a steplake key) is not forwarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError, UpstreamFailure  # UpstreamFailure: re-exported (it lives in the error tree)

UpstreamKind = Literal["vllm", "steplake", "sglang", "llamacpp", "openai"]
KINDS: tuple[str, ...] = ("vllm", "steplake", "sglang", "llamacpp", "openai")
RELOADABLE: tuple[str, ...] = ("steplake", "sglang", "vllm")


@dataclass
class Upstream:
    """One inference server and what the gateway knows about it."""

    root: str  # scheme://host:port[/prefix], without /v1
    kind: str | None  # None until detected
    declared: bool = False  # kind came from a prefix
    local: bool = False  # the embedded model started by the gateway
    healthy: bool | None = None  # None: unknown yet
    loading: bool = False  # answered 503 on /health (model loading)
    last_check: float = 0.0
    last_error: str | None = None
    model_id: str | None = None
    requests: int = 0
    errors: int = 0
    retries: int = 0
    ids_missing: int = 0
    ids_inconsistent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.root + "/v1"

    @property
    def effective_kind(self) -> str:
        return self.kind or "vllm"

    def mark(self, ok: bool, error: str | None = None) -> None:
        self.healthy = ok
        self.last_check = time.monotonic()
        self.last_error = None if ok else error

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.root, "kind": self.effective_kind, "server": server_of(self), "detected": not self.declared,
            "local": self.local,
            "healthy": bool(self.healthy), "loading": self.loading, "last_error": self.last_error,
            "model": self.model_id, "requests": self.requests, "errors": self.errors, "retries": self.retries,
            "ids_missing": self.ids_missing, "ids_inconsistent": self.ids_inconsistent,
            "stale_weights": self.extra.get("stale_weights"),
        }


def server_of(up: Upstream) -> str | None:
    """The identified server as ``"<name> <version>"`` (``"vllm 0.32.0"``), or None when not identified."""
    server = up.extra.get("server")
    return f"{server['name']} {server['version']}" if server else None


def parse_upstream(spec: str) -> Upstream:
    """``[kind+]http(s)://host:port[/path][/v1]`` → Upstream (kind None when it must be detected)."""
    s = spec.strip()
    kind: str | None = None
    head, sep, rest = s.partition("+")
    if sep and head in KINDS and rest.startswith(("http://", "https://")):
        kind, s = head, rest
    if not s.startswith(("http://", "https://")):
        raise ConfigError(f"upstream {spec!r} must be an http(s) URL, optionally prefixed with one of "
                          f"{', '.join(k + '+' for k in KINDS)}")
    parts = urlsplit(s)
    key = unquote(parts.password or parts.username or "") if "@" in parts.netloc else ""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    root = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    up = Upstream(root=root, kind=kind, declared=kind is not None)
    if key:
        up.extra["api_key"] = key
    return up


__all__ = ["Upstream", "UpstreamKind", "KINDS", "RELOADABLE", "parse_upstream", "server_of", "UpstreamFailure"]
