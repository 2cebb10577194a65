"""A step's stored form, computed once and shared by both stores: packed ids and logprobs, the content hash
that makes retries idempotent, and the JSON document of everything else.

``SqliteStore.append_steps`` encodes in the caller's thread, so request threads pack and hash while the
writer thread is inside SQLite (which releases the GIL); the writer only binds the prepared values."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import Step
from .codec import dumps, floats_to_bytes, ids_to_bytes, loads

_HASH_EXCLUDE = {"prompt_ids", "response_ids", "response_logprobs", "continuity", "parent_step_id",
                 "shared_prefix_len", "created_at", "step_index"}


@dataclass(frozen=True, slots=True)
class Encoded:
    prompt: bytes  # int32 little-endian
    response: bytes
    logprobs: bytes | None  # float32 little-endian
    content_hash: bytes
    doc: bytes  # messages, tools, response, sampling, usage, metadata, provenance
    text: str  # what message search finds this step by (see search_text)


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


def search_text(messages: Any, response: Any) -> str:
    """The text message search looks in for one step: the messages new since the model's last turn (all of
    them on a first step; earlier turns were indexed with the steps that produced or received them) and the
    response (content, reasoning, tool calls). Each message of a conversation is indexed about once, not once
    per later step that repeats it in its history."""
    parts: list[str] = []
    msgs = messages if isinstance(messages, list) else []
    last_assistant = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
                         default=-1)
    for m in msgs[last_assistant + 1:]:
        if isinstance(m, dict):
            parts += _content_text(m.get("content"))
            parts += _calls_text(m.get("tool_calls"))
    if isinstance(response, dict):
        parts += _content_text(response.get("content"))
        if isinstance(response.get("reasoning"), str):
            parts.append(response["reasoning"])
        parts += _calls_text(response.get("tool_calls"))
    # NUL never reaches the index: PostgreSQL text cannot hold it and FTS5 query strings end at it
    return "\n".join(p for p in parts if p).replace("\x00", "")[:MAX_SEARCH_CHARS]


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


def backfill_text(fetch: Callable[[int], Sequence[tuple[int, str, Any]]],
                  insert: Callable[[list[tuple[int, str, str]]], None]) -> int:
    """Index the text of steps stored before the search index existed: ``fetch(after_seq)`` returns the next
    chunk of ``(seq, trajectory_id, doc)`` rows in seq order, ``insert`` writes ``(seq, trajectory_id, text)``
    rows. Used by both stores' migrations; returns the number of steps indexed."""
    last, n = 0, 0
    while rows := fetch(last):
        out = []
        for seq, tid, doc in rows:
            d = loads(doc)
            text = search_text(d.get("messages"), d.get("response")) if isinstance(d, dict) else ""
            if text:
                out.append((seq, tid, text))
        if out:
            insert(out)
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


__all__ = ["Encoded", "encode_step", "encode_steps", "step_content_hash", "search_text", "backfill_text", "MAX_SEARCH_CHARS"]
