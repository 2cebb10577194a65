"""A step's stored form, computed once and shared by both stores: packed ids and logprobs, the content hash
that makes retries idempotent, and the JSON document of everything else.

``SqliteStore.append_steps`` encodes in the caller's thread, so request threads pack and hash while the
writer thread is inside SQLite (which releases the GIL); the writer only binds the prepared values."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..records import Step
from .codec import dumps, floats_to_bytes, ids_to_bytes

_HASH_EXCLUDE = {"prompt_ids", "response_ids", "response_logprobs", "continuity", "parent_step_id",
                 "shared_prefix_len", "created_at", "step_index"}


@dataclass(frozen=True, slots=True)
class Encoded:
    prompt: bytes  # int32 little-endian
    response: bytes
    logprobs: bytes | None  # float32 little-endian
    content_hash: bytes
    doc: bytes  # messages, tools, response, sampling, usage, metadata, provenance


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


def encode_step(s: Step) -> Encoded:
    prompt, response = ids_to_bytes(s.prompt_ids), ids_to_bytes(s.response_ids)
    logprobs = floats_to_bytes(s.response_logprobs)
    doc = {"messages": s.messages, "tools": s.tools,
           "response": s.response.model_dump(exclude_none=True) if s.response else None,
           "sampling": s.sampling, "usage": s.usage, "metadata": s.metadata, "provenance": s.provenance}
    return Encoded(prompt, response, logprobs, step_content_hash(s, prompt, response, logprobs), dumps(doc))


def encode_steps(steps: Sequence[Step]) -> list[Encoded]:
    return [encode_step(s) for s in steps]


__all__ = ["Encoded", "encode_step", "encode_steps", "step_content_hash"]
