"""Local tokenizer fallback (``--tokenizer``) for upstreams that report no token ids.

Prompt ids = the tokenizer's chat template applied to the request (tools included), with the generation
prompt; response ids = the answer text encoded without special tokens, plus the end-of-sequence id when
``finish_reason == "stop"``. Such steps carry ``token_source = "tokenizer"``: the ids are a re-encoding,
not necessarily what the model sampled (decode → encode does not round-trip).
Loaded lazily in a worker thread, offline (never from a hub).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any


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

    def load(self) -> Any:
        with self._lock:
            if self._tok is not None or self.error is not None:
                return self._tok
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from transformers import AutoTokenizer

                p = Path(self.spec)
                if p.suffix == ".gguf":
                    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
                else:
                    tok = AutoTokenizer.from_pretrained(self.spec, local_files_only=True)
            except Exception as e:  # missing files, bad format
                self.error = f"cannot load tokenizer {self.spec!r}: {type(e).__name__}: {e}"
                return None
            tmpl = getattr(tok, "chat_template", None)
            if isinstance(tmpl, str):
                self.chat_template_hash = "sha256:" + hashlib.sha256(tmpl.encode()).hexdigest()[:16]
            self._tok = tok
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


__all__ = ["FallbackTokenizer"]
