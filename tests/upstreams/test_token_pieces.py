"""One string per token for the token view: decoding through any ``decode`` (a local tokenizer, an upstream's
/detokenize) gives the same pieces as decoding the tokens' bytes incrementally."""

from __future__ import annotations

import random

from steplake.upstreams.tokenizer import assemble_pieces, partial_windows, token_pieces, utf8_pieces


def toy_vocab(text: str, rng: random.Random) -> tuple[list[int], list[bytes]]:
    """``text`` cut into byte-level tokens of 1-5 bytes (characters split anywhere)."""
    raw, chunks, i = text.encode(), [], 0
    while i < len(raw):
        n = rng.randint(1, 5)
        chunks.append(raw[i:i + n])
        i += n
    vocab = list(dict.fromkeys(chunks))
    return [vocab.index(c) for c in chunks], vocab


def test_pieces_through_decode_equal_incremental_utf8() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice("ab é€中😀ß\n") for _ in range(rng.randint(1, 30)))
        ids, vocab = toy_vocab(text, rng)

        def decode(xs: list[int], vocab: list[bytes] = vocab) -> str:
            return b"".join(vocab[x] for x in xs).decode("utf-8", "replace")
        want = utf8_pieces(vocab[i] for i in ids)
        assert "".join(want) == text
        assert token_pieces(ids, decode) == want
        singles = [decode([i]) for i in ids]  # what a remote detokenizer answers, in one round
        windows = {w: decode(ids[w[0]:w[1] + 1]) for w in partial_windows(singles)}
        assert all(w[1] - w[0] <= 3 for w in windows)
        assert assemble_pieces(singles, lambda j, k, w=windows: w[(j, k)]) == want


def test_a_character_shows_on_the_token_completing_it() -> None:
    assert utf8_pieces([b"a\xf0\x9f", b"\x98", b"\x80b"]) == ["a", "", "😀b"]
    assert utf8_pieces([b"x", b"\xe4\xb8"]) == ["x", "\ufffd"]  # cut off at the end
    long_run = "中文字符" * 60  # 2-byte tokens, 3-byte characters: no token ends on a character boundary...
    raw = long_run.encode()
    chunks = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    vocab = list(dict.fromkeys(chunks))
    ids = [vocab.index(c) for c in chunks]
    pieces = token_pieces(ids, lambda xs: b"".join(vocab[x] for x in xs).decode("utf-8", "replace"))
    assert pieces == utf8_pieces(chunks) and "\ufffd" not in "".join(pieces)  # ... for 360 tokens in a row
