"""Each token's text from an upstream's ``POST /detokenize``, for the dashboard's token view when no local
tokenizer is configured.

Wire (vLLM's): ``{"tokens": [ids]}`` → ``{"prompt": text}`` (llama.cpp answers ``{"content": text}``). The
embedded model server also answers ``token_texts`` (one string per id, in context) when asked with
``"return_token_texts": true``: one request per view. Other servers are asked once per distinct id (cached
per upstream), then for the few short windows that characters split over several tokens need
(``assemble_pieces``), ``CONCURRENCY`` requests at a time. An upstream that failed is skipped for
``RETRY_AFTER`` seconds; an id it refuses (400/422) reads ``<id>``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .base import Upstream
from .tokenizer import assemble_pieces, partial_windows

DETOKENIZE_KINDS = (None, "vllm", "steplake", "llamacpp")  # None: not detected yet (vLLM-style by default)
CONCURRENCY = 16
RETRY_AFTER = 30.0
MAX_CACHE = 200_000


class DetokenizeError(Exception):
    """An upstream's /detokenize answered something unusable (5xx, not JSON, no text)."""


@dataclass(frozen=True)
class DetokenizeTarget:
    root: str  # scheme://host:port, without /v1
    kind: str | None
    api_key: str | None = None


def detokenize_targets(upstreams: Sequence[Upstream]) -> list[DetokenizeTarget]:
    """The upstreams that may answer /detokenize, healthy ones first."""
    ups = sorted((u for u in upstreams if u.kind in DETOKENIZE_KINDS), key=lambda u: not u.healthy)
    return [DetokenizeTarget(u.root, u.kind, u.extra.get("api_key")) for u in ups]


class RemoteDetokenizer:
    def __init__(self, targets: Callable[[], list[DetokenizeTarget]], *, timeout: float = 10.0) -> None:
        self.targets = targets
        self.timeout = timeout
        self.used: str | None = None  # the root that answered last
        self.error: str | None = None  # why the last try found no upstream to answer
        self._cache: dict[str, dict[int, str]] = {}
        self._no_texts: set[str] = set()  # roots that ignored return_token_texts (vLLM)
        self._failed: dict[str, float] = {}

    async def decode(self, ids: Sequence[int]) -> list[str] | None:
        """One string per id from the first upstream that answers, or None when none does."""
        errors = []
        for t in self.targets():
            if time.monotonic() - self._failed.get(t.root, -math.inf) < RETRY_AFTER:
                continue
            headers = {"Authorization": f"Bearer {t.api_key}"} if t.api_key else None
            try:
                async with httpx.AsyncClient(timeout=self.timeout, headers=headers) as client:
                    out = await self._decode(client, t, list(ids))
            except (httpx.HTTPError, DetokenizeError) as e:
                self._failed[t.root] = time.monotonic()
                errors.append(f"{t.root}/detokenize: {type(e).__name__}: {e}")
                continue
            self.used, self.error = t.root, None
            return out
        if errors:
            self.error = "; ".join(errors)
        return None

    async def _decode(self, client: httpx.AsyncClient, t: DetokenizeTarget, ids: list[int]) -> list[str]:
        if not ids:
            return []
        if t.root not in self._no_texts and t.kind in (None, "steplake"):
            body = await _post(client, t.root, {"tokens": ids, "return_token_texts": True})
            texts = body.get("token_texts") if body is not None else None
            if isinstance(texts, list) and len(texts) == len(ids) and all(isinstance(x, str) for x in texts):
                return texts
            if body is not None:  # answered without them: vLLM ignores the field: ask id by id from now on
                self._no_texts.add(t.root)
        singles = await self._singles(client, t.root, ids)
        wanted = partial_windows(singles)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(j: int, k: int) -> str:
            async with sem:
                text = await _text(client, t.root, ids[j:k + 1])
            return text if text is not None else "".join(singles[j:k + 1])
        got = dict(zip(wanted, await asyncio.gather(*(one(j, k) for j, k in wanted)), strict=True))
        return assemble_pieces(singles, lambda j, k: got[(j, k)])

    async def _singles(self, client: httpx.AsyncClient, root: str, ids: list[int]) -> list[str]:
        cache = self._cache.setdefault(root, {})
        if len(cache) > MAX_CACHE:
            cache.clear()
        missing = sorted(set(ids) - cache.keys())
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                text = await _text(client, root, [i])
            cache[i] = text if text is not None else f"<{i}>"
        await asyncio.gather(*(one(i) for i in missing))
        return [cache[i] for i in ids]


async def _post(client: httpx.AsyncClient, root: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON answer; None when the upstream refused the ids (400/422: an id outside its vocabulary)."""
    r = await client.post(root + "/detokenize", json=body)
    if r.status_code in (400, 422):
        return None
    if r.status_code != 200:  # 404: no /detokenize; 401: a key is needed; 5xx
        raise DetokenizeError(f"answered {r.status_code}")
    try:
        out = r.json()
    except ValueError as e:
        raise DetokenizeError("answered something other than JSON") from e
    if not isinstance(out, dict):
        raise DetokenizeError("answered something other than a JSON object")
    return out


async def _text(client: httpx.AsyncClient, root: str, ids: list[int]) -> str | None:
    body = await _post(client, root, {"tokens": ids})
    if body is None:
        return None
    text = body.get("prompt", body.get("content"))
    if not isinstance(text, str):
        raise DetokenizeError("answered no text (neither 'prompt' nor 'content')")
    return text


__all__ = ["RemoteDetokenizer", "DetokenizeTarget", "DetokenizeError", "detokenize_targets", "DETOKENIZE_KINDS"]
