"""Local tokenizer fallback (``--tokenizer``) for upstreams that report no token ids.

Prompt ids = the tokenizer's chat template applied to the request (tools included), with the generation
prompt; response ids = the answer text encoded without special tokens, plus the end-of-sequence id when
``finish_reason == "stop"``. Such steps carry ``token_source = "tokenizer"``: the ids are a re-encoding,
not necessarily what the model sampled (decode → encode does not round-trip).
Loaded offline (never from a hub), once: the gateway starts the load in a background thread when it starts
(``start_loading``) and reports not-ready until it is done (``problem``); a capture that comes earlier waits
for it, and a failed load is reported, not retried.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("steplake.tokenizer")
_IMPORT = threading.Lock()  # transformers' lazy attributes are not safe to import from two threads at once


class FallbackTokenizer:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._tok: Any = None
        self._lock = threading.Lock()
        self.error: str | None = None
        self.chat_template_hash: str | None = None

    @property
    def ident(self) -> str:
        return self.spec

    @property
    def loaded(self) -> bool:
        return self._tok is not None

    def start_loading(self) -> threading.Thread:
        """Load in a background thread (the gateway calls this at start)."""
        t = threading.Thread(target=self.load, name="steplake-tokenizer-load", daemon=True)
        t.start()
        return t

    def problem(self) -> str | None:
        """Why the tokenizer cannot encode now (loading, or the load failed); None once it is loaded."""
        if self._tok is not None:
            return None
        return self.error or f"loading tokenizer {self.spec!r}"

    def load(self) -> Any:
        with self._lock:
            if self._tok is not None or self.error is not None:
                return self._tok
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            t0 = time.monotonic()
            try:
                with _IMPORT:
                    from transformers import AutoTokenizer

                p = Path(self.spec)
                if p.suffix == ".gguf":
                    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
                else:
                    tok = AutoTokenizer.from_pretrained(self.spec, local_files_only=True)
            except Exception as e:  # missing files, bad format
                self.error = f"cannot load tokenizer {self.spec!r}: {type(e).__name__}: {e}"
                log.error("%s", self.error)
                return None
            tmpl = getattr(tok, "chat_template", None)
            if isinstance(tmpl, str):
                self.chat_template_hash = "sha256:" + hashlib.sha256(tmpl.encode()).hexdigest()[:16]
            self._tok = tok
            log.info("tokenizer %s loaded in %.1f s", self.spec, time.monotonic() - t0)
            return tok

    def encode_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        tok = self.load()
        if tok is None:
            raise RuntimeError(self.error or "tokenizer unavailable")
        msgs = [{**m, "content": _text(m.get("content"))} for m in messages]
        text = tok.apply_chat_template(msgs, tools=tools or None, add_generation_prompt=True, tokenize=False)
        return list(tok.encode(text, add_special_tokens=False))

    def encode_text(self, text: str, special: bool = True) -> list[int]:
        tok = self.load()
        if tok is None:
            raise RuntimeError(self.error or "tokenizer unavailable")
        return list(tok.encode(text, add_special_tokens=special))

    def encode_response(self, text: str, finish_reason: str | None) -> list[int]:
        ids = self.encode_text(text, special=False)
        eos = getattr(self._tok, "eos_token_id", None)
        if finish_reason == "stop" and isinstance(eos, int):
            ids.append(eos)
        return ids


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


REPLACEMENT = "\ufffd"
LOOKBACK = 3  # a UTF-8 character has at most 4 bytes, so it ends at most 3 tokens after the one it starts in


def utf8_pieces(chunks: Iterable[bytes]) -> list[str]:
    """Each token's text from its raw bytes, decoded incrementally: a multi-byte character split over
    several tokens shows on the token that completes it (the ones before it are ``""``), and bytes that never
    form a character read U+FFFD. The pieces concatenate to the whole text."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [dec.decode(b) for b in chunks]
    tail = dec.decode(b"", final=True)
    if tail and out:
        out[-1] += tail
    return out


def _partial_runs(singles: Sequence[str]) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of consecutive tokens whose own text holds U+FFFD (parts of characters). A run
    starts on a character boundary: the token before it decoded cleanly."""
    runs: list[tuple[int, int]] = []
    start = None
    for k, text in enumerate([*singles, ""]):
        if REPLACEMENT in text:
            start = k if start is None else start
        elif start is not None:
            runs.append((start, k))
            start = None
    return runs


def partial_windows(singles: Sequence[str]) -> list[tuple[int, int]]:
    """The windows ``(j, k)`` (``ids[j:k + 1]``, at most 4 tokens) whose decoded text ``assemble_pieces``
    needs beyond each token alone, so that a remote detokenizer can be asked for all of them at once."""
    out: set[tuple[int, int]] = set()
    for a, b in _partial_runs(singles):
        for k in range(a, b):
            j = max(a, k - LOOKBACK)
            out.update((j, e) for e in (k - 1, k) if j < e)
    return sorted(out)


def _core(text: str, lead: bool, trail: bool) -> str:
    """A window's text without the U+FFFD of bytes cut at its start (``lead``) and at its end (``trail``)."""
    text = text.lstrip(REPLACEMENT) if lead else text
    return text.rstrip(REPLACEMENT) if trail else text


def assemble_pieces(singles: Sequence[str], window: Callable[[int, int], str]) -> list[str]:
    """One string per token from each token's own text (``singles``) and, in a run of tokens holding parts
    of characters, the decoded text of short windows (``window(j, k)`` = decode of ``ids[j:k + 1]``): the
    characters token k completes are those the window ending at k adds to the window ending at k - 1 (same
    start, at most 3 tokens back). Incremental detokenization, the same result as ``utf8_pieces`` for a
    byte-level tokenizer, with any decode: a local tokenizer or an upstream's ``/detokenize``."""
    out = list(singles)

    def text(j: int, k: int) -> str:
        return singles[j] if j == k else window(j, k)
    for a, b in _partial_runs(singles):
        for k in range(a, b):
            j = max(a, k - LOOKBACK)
            now = _core(text(j, k), lead=j > a, trail=k < b - 1)
            before = _core(text(j, k - 1), lead=j > a, trail=True) if j < k else ""
            out[k] = now[len(before):] if now.startswith(before) else singles[k]
    return out


def token_pieces(ids: Sequence[int], decode: Callable[[list[int]], str]) -> list[str]:
    """``assemble_pieces`` with a local ``decode``: each distinct id decoded once, windows on demand."""
    own: dict[int, str] = {}
    for i in ids:
        if i not in own:
            own[i] = decode([i])
    singles = [own[i] for i in ids]
    return assemble_pieces(singles, lambda j, k: decode(list(ids[j:k + 1])))


__all__ = ["FallbackTokenizer", "utf8_pieces", "partial_windows", "assemble_pieces", "token_pieces",
           "REPLACEMENT"]
