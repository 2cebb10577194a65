"""Token bytes and incremental detokenization (streaming text deltas, stop strings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2 byte-level BPE alphabet: printable stand-in character → byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


class Vocabulary:
    """Raw bytes of every token id, and which ids are special (control) tokens."""

    def __init__(self, tokenizer: Any) -> None:
        self.size = len(tokenizer)
        self.special_ids: frozenset[int] = frozenset(
            int(i) for i in (*tokenizer.all_special_ids, *getattr(tokenizer, "added_tokens_decoder", {}))
        )
        pieces: list[str] = tokenizer.convert_ids_to_tokens(list(range(self.size)))
        alphabet = _byte_level_alphabet()
        table: list[bytes] = []
        byte_level = True
        for i, piece in enumerate(pieces):
            if i in self.special_ids or piece is None:
                table.append((piece or "").encode())
                continue
            try:
                table.append(bytes(alphabet[c] for c in piece))
            except KeyError:
                byte_level = False
                break
        if not byte_level:  # not a byte-level BPE: fall back to per-token decoding
            table = [tokenizer.decode([i]).encode() for i in range(self.size)]
        self.byte_level = byte_level
        self.token_bytes: list[bytes] = table
        self.strings: list[str] = [b.decode("utf-8", errors="replace") for b in table]

    def constrainable(self, token_id: int) -> bytes | None:
        """The bytes a token adds to the visible text, or None for control tokens."""
        if token_id in self.special_ids or token_id >= len(self.token_bytes):
            return None
        return self.token_bytes[token_id]


class TextTracker:
    """Turns sampled ids into text deltas; holds back partial UTF-8 and possible stop-string starts.

    ``push`` returns ``(delta, stop)`` where ``stop`` is the matched stop string (the text then ends
    before it, like OpenAI: the stop string is not returned). ``flush`` releases what was held back.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._checked = 0  # stop strings were searched up to here (minus overlap)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def _decode(self) -> str:
        return str(self._tok.decode(self._ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def push(self, token_id: int, check_stop: bool = True) -> tuple[str, str | None]:
        if self.stopped:
            return "", None
        self._ids.append(token_id)
        self.text = self._decode()
        if check_stop and self._stop:
            hit = self._find_stop()
            if hit is not None:
                idx, s = hit
                self.text = self.text[:idx]
                self.stopped = True
                return self._take(len(self.text)), s
        self._checked = len(self.text)
        return self._take(self._safe_end(check_stop)), None

    def flush(self) -> str:
        return self._take(len(self.text))

    def _find_stop(self) -> tuple[int, str] | None:
        longest = max(len(s) for s in self._stop)
        start = max(0, self._checked - longest - 4)
        best: tuple[int, str] | None = None
        for s in self._stop:
            idx = self.text.find(s, start)
            if idx >= 0 and (best is None or idx < best[0]):
                best = (idx, s)
        return best

    def _safe_end(self, check_stop: bool) -> int:
        end = len(self.text)
        if self.text.endswith("\ufffd"):
            end = len(self.text.rstrip("\ufffd"))
        if check_stop:
            hold = 0
            for s in self._stop:
                for k in range(min(len(s) - 1, end), hold, -1):
                    if self.text[end - k:end] == s[:k]:
                        hold = k
                        break
            end -= hold
        return max(end, self.emitted)

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta


__all__ = ["Vocabulary", "TextTracker"]
