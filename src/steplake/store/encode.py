"""A step's stored form, computed once and shared by both stores: packed ids and logprobs, the content hash
that makes retries idempotent, and the JSON document of everything else.

``SqliteStore.append_steps`` encodes in the caller's thread, so request threads pack and hash while the
writer thread is inside SQLite (which releases the GIL); the writer only binds the prepared values."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..records import Step
from .codec import dumps, floats_to_bytes, ids_to_bytes, loads
from .dialect import Dialect

_HASH_EXCLUDE = {"prompt_ids", "response_ids", "response_logprobs", "continuity", "parent_step_id",
                 "shared_prefix_len", "created_at", "step_index"}


@dataclass(frozen=True, slots=True)
class Encoded:
    prompt: bytes  # int32 little-endian
    response: bytes
    logprobs: bytes | None  # float32 little-endian
    content_hash: bytes
    doc: bytes  # messages, tools, response, sampling, usage, metadata, provenance
    text: str  # what message search finds this step by (see search_text; the store adds indexed_text's history)


MAX_SEARCH_CHARS = 20_000


def _content_text(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                for key in ("text", "content", "thinking"):
                    if isinstance(part.get(key), str):
                        out.append(part[key])
            elif isinstance(part, str):
                out.append(part)
    return out


def _calls_text(calls: Any) -> list[str]:
    out: list[str] = []
    for c in calls if isinstance(calls, list) else []:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            out += [str(fn.get("name") or ""), str(fn.get("arguments") or "")]
    return out


def _last_assistant(msgs: list[Any]) -> int:
    return max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"), default=-1)


def _messages_text(msgs: list[Any]) -> list[str]:
    parts: list[str] = []
    for m in msgs:
        if isinstance(m, dict):
            parts += _content_text(m.get("content"))
            parts += _calls_text(m.get("tool_calls"))
    return parts


def _joined(parts: list[str], limit: int = MAX_SEARCH_CHARS) -> str:
    # NUL never reaches the index: PostgreSQL text cannot hold it and FTS5 query strings end at it
    return "\n".join(p for p in parts if p).replace("\x00", "")[:limit]


def search_text(messages: Any, response: Any) -> str:
    """The text message search finds a step by, as far as the step itself tells: the messages new since the
    model's last turn and the response (content, reasoning, tool calls). The history before that turn is
    added by ``indexed_text`` when no earlier step of the trajectory holds it."""
    msgs = messages if isinstance(messages, list) else []
    parts = _messages_text(msgs[_last_assistant(msgs) + 1:])
    if isinstance(response, dict):
        parts += _content_text(response.get("content"))
        if isinstance(response.get("reasoning"), str):
            parts.append(response["reasoning"])
        parts += _calls_text(response.get("tool_calls"))
    return _joined(parts)


def history_text(messages: Any) -> str:
    """The text of the messages up to and including the model's last turn: what ``search_text`` leaves out."""
    msgs = messages if isinstance(messages, list) else []
    return _joined(_messages_text(msgs[:_last_assistant(msgs) + 1]))


def indexed_text(own: str, messages: Any, continuity: str | None) -> str:
    """What a stored step is indexed by: ``own`` (its ``search_text``) and, on a step whose history no earlier
    step of its trajectory holds — the first one (an agent's first call may carry many turns) or a ``fork``
    (the history was rewritten) — that history too, so every message of a conversation is found. Later
    ``clean``/``realigned`` steps repeat history their parents indexed: each message is indexed about once.
    ``own`` is kept whole; the history fills the rest of ``MAX_SEARCH_CHARS``."""
    if continuity not in ("first", "fork", None):
        return own
    room = MAX_SEARCH_CHARS - len(own) - (1 if own else 0)
    head = history_text(messages)[:room] if room > 0 else ""
    return "\n".join(p for p in (head, own) if p)


def step_content_hash(s: Step, prompt: bytes, response: bytes, logprobs: bytes | None) -> bytes:
    """Identity of a step's content (what a retry must repeat exactly); server-set fields are left out."""
    h = hashlib.blake2b(digest_size=16)
    h.update(prompt)
    h.update(b"|")
    h.update(response)
    h.update(b"|")
    h.update(logprobs or b"-")
    h.update(dumps(s.model_dump(exclude=_HASH_EXCLUDE, exclude_none=True)))
    return h.digest()


def index_existing_text(conn: Any, dialect: Dialect, chunk: int = 5000) -> int:
    """Index the text of steps stored before the search index existed (both stores' migrations, on the
    migration's connection), ``chunk`` steps at a time in seq order (see ``indexed_text``); returns the
    number of steps indexed."""
    select = dialect.sql("SELECT seq, trajectory_id, doc, continuity FROM steps WHERE seq > ? ORDER BY seq LIMIT ?")
    insert = dialect.sql(f"INSERT INTO step_text({dialect.rowid}, trajectory_id, text) VALUES (?, ?, ?)")
    last, n = 0, 0
    while rows := conn.execute(select, (last, chunk)).fetchall():
        out = []
        for seq, tid, doc, continuity in rows:
            d = loads(doc)
            text = indexed_text(search_text(d.get("messages"), d.get("response")), d.get("messages"),
                                continuity) if isinstance(d, dict) else ""
            if text:
                out.append((seq, tid, text))
        if out:
            cur = conn.cursor()
            cur.executemany(insert, out)
            cur.close()
        n += len(out)
        last = rows[-1][0]
    return n


def encode_step(s: Step) -> Encoded:
    prompt, response = ids_to_bytes(s.prompt_ids), ids_to_bytes(s.response_ids)
    logprobs = floats_to_bytes(s.response_logprobs)
    doc = {"messages": s.messages, "tools": s.tools,
           "response": s.response.model_dump(exclude_none=True) if s.response else None,
           "sampling": s.sampling, "usage": s.usage, "metadata": s.metadata, "provenance": s.provenance}
    return Encoded(prompt, response, logprobs, step_content_hash(s, prompt, response, logprobs), dumps(doc),
                   search_text(s.messages, doc["response"]))


def encode_steps(steps: Sequence[Step]) -> list[Encoded]:
    return [encode_step(s) for s in steps]


__all__ = ["Encoded", "encode_step", "encode_steps", "step_content_hash", "search_text", "history_text", "indexed_text",
           "index_existing_text", "MAX_SEARCH_CHARS"]
