"""The Store protocol: the one small interface every backend implements (SQLite, PostgreSQL).

All methods are synchronous and thread-safe; the pool calls them from worker threads. Records travel as
plain dicts shaped as CONTRACT §1 (the HTTP answers; their keys are declared once in ``steplake.types``:
``StepOut``, ``TrajectoryOut``, ``GroupOut``, ``PolicyOut``, ``EventOut``), token ids as lists of ints.

Contract (checked by tests/store/test_contract.py against every implementation):
- ``append_steps`` is atomic per call: either every step of the call is stored (or was already stored
  with identical content) or none is, and it returns only after commit (durable). A step id already
  stored with other content raises ``ConflictError``. Unknown trajectories are opened, unknown groups
  created (size 1). ``step_index`` None means "next index of its trajectory" (gateway captures).
- Continuity (CONTRACT §3) is computed on insert; reads return full ids whatever prefix sharing stored.
- ``submit_steps`` enqueues gateway captures for the next group commit without waiting; the callback
  gets ``None`` or the exception once committed/failed.
- Leasing in ``select_batch`` is atomic: a group is leased to at most one batch at a time.
- Every state change appends an event (kind, data) readable with ``read_events`` in commit order.
- ``claim_rewards`` hands each (trajectory, component, version) to one owner across every process on the
  pool until it is settled done; a released or stale (``stale_after`` seconds) claim can be taken again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..records import BatchIn, CurationIn, FeedbackIn, RewardIn, Step
from ..types import Json
from .claims import ClaimKey


@dataclass
class Page:
    items: list[Json]
    next_cursor: str | None


@dataclass
class AppendResult:
    accepted: int
    duplicates: int = 0
    step_ids: list[str] = field(default_factory=list)


@dataclass
class BatchSelection:
    """What ``select_batch`` leased (or would lease when ``dry_run``)."""

    batch_id: str | None
    lease_expires_at: float | None
    groups: list[Json]  # [{group_id, trajectories: [{trajectory_id, reward, ..., steps: [Step]}]}]
    excluded: dict[str, int]
    policy_version: int


@dataclass
class KeyRecord:
    key_id: str
    scope: str
    name: str | None
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None
    binding: Json | None = None  # {trajectory_id, group_id?, channel?, metadata?}: a key bound to a session


# the audit log's entries (fields: steplake.store.audit): what ``append_audit`` takes
ACTIONS = ("key.create", "key.revoke", "session.create", "trajectory.delete", "trajectories.prune",
           "policy.publish", "curation.update", "rewards.run", "export.create")
VIAS = ("key", "session", "open", "cli", "server")
MAX_TEXT = 256


def audit_entry(action: str, *, actor: str, via: str, target: str | None = None, summary: Json | None = None,
                client: str | None = None, at: float | None = None) -> Json:
    """An entry to append (``append_audit``); text fields are cut to ``MAX_TEXT`` characters."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if via not in VIAS:
        raise ValueError(f"unknown audit via {via!r}")
    return {"at": time.time() if at is None else at, "actor": _text(actor), "via": via, "action": action,
            "target": None if target is None else _text(str(target)), "summary": dict(summary or {}),
            "client": None if client is None else _text(client)}


def _text(value: str) -> str:
    return value.replace("\x00", "")[:MAX_TEXT]  # PostgreSQL text holds no NUL


class Store(Protocol):
    # lifecycle
    def open(self) -> None: ...
    def close(self) -> None: ...
    def ping(self) -> bool: ...
    def storage_problem(self) -> str | None: ...  # why writes fail now (disk full), else None
    # ``hook()`` runs (in a store thread) after each commit, and on PostgreSQL when another server commits
    def set_commit_hook(self, hook: Callable[[], None] | None) -> None: ...

    # steps
    def append_steps(self, steps: Sequence[Step]) -> AppendResult: ...
    def submit_steps(self, steps: Sequence[Step], callback: Callable[[BaseException | None], None] | None = None
                     ) -> None: ...
    def get_step(self, step_id: str) -> Json | None: ...
    def list_steps(self, filters: Json, cursor: str | None, limit: int, with_ids: bool = True) -> Page: ...
    def steps_of(self, trajectory_ids: Sequence[str]) -> dict[str, list[Json]]: ...

    # trajectories and groups
    def create_trajectory(self, trajectory_id: str, group_id: str | None, group_size: int | None,
                          channel: str | None, metadata: Json) -> Json: ...
    def create_group(self, group_id: str, n: int, channel: str | None, metadata: Json,
                     trajectory_ids: Sequence[str]) -> Json: ...
    def complete_trajectory(self, trajectory_id: str, reward: float | None, metadata: Json | None = None
                            ) -> Json: ...
    def get_trajectory(self, trajectory_id: str, with_steps: bool = True) -> Json | None: ...
    def list_trajectories(self, filters: Json, cursor: str | None, limit: int) -> Page: ...
    def trajectory_ids_matching(self, filters: Json, limit: int = 100_000) -> list[str]: ...
    def delete_trajectory(self, trajectory_id: str) -> bool: ...
    def get_group(self, group_id: str) -> Json | None: ...
    def list_groups(self, filters: Json, cursor: str | None, limit: int) -> Page: ...
    def sweep_idle(self, idle_timeout: float, now: float | None = None) -> int: ...
    def find_open_trajectory(self, exchange_hash: str) -> str | None: ...

    # rewards, curation, feedback
    def add_reward(self, reward: RewardIn) -> Json: ...
    def list_rewards(self, trajectory_id: str | None = None, step_id: str | None = None) -> list[Json]: ...
    def curate(self, change: CurationIn) -> int: ...
    def curation_history(self, target_id: str) -> list[Json]: ...
    def add_feedback(self, feedback: FeedbackIn) -> Json: ...
    def list_feedback(self, filters: Json) -> list[Json]: ...

    # batches and policy
    def select_batch(self, request: BatchIn) -> BatchSelection: ...
    def record_batch_details(self, batch_id: str, details: Json) -> None: ...
    def ack_batch(self, batch_id: str) -> Json: ...
    def get_batch(self, batch_id: str) -> Json | None: ...
    def publish_policy(self, version: int, weights_path: str | None, note: str | None) -> Json: ...
    def get_policy(self) -> Json: ...

    # events and stats
    def read_events(self, after: int, limit: int = 1000) -> list[Json]: ...
    def last_event_id(self) -> int: ...
    def stats(self) -> Json: ...
    # the dashboard overview (steplake.store.overview): the same JSON from every backend, never sampled
    def read_overview(self, policy_version: int, window: float, bucket: float, now: float | None = None
                      ) -> Json: ...

    # keys
    def create_key(self, scope: str, name: str | None, binding: Json | None = None) -> tuple[KeyRecord, str]: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def revoke_key(self, key_id: str) -> bool: ...
    def rebind_key(self, key_id: str, binding: Json) -> bool: ...  # a session key follows its session
    def lookup_key(self, secret: str) -> KeyRecord | None: ...
    def has_keys(self) -> bool: ...  # an unrevoked key *not* bound to a session exists (keys are required)

    # reward claims (steplake.store.claims): who scores (trajectory_id, component, version), once per pool
    def claim_rewards(self, keys: Sequence[ClaimKey], owner: str, stale_after: float,
                      now: float | None = None) -> list[ClaimKey]: ...
    def settle_rewards(self, keys: Sequence[ClaimKey], owner: str, done: bool) -> None: ...

    # audit log (steplake.store.audit): entries from audit_entry(); pages newest first, cursor = last id
    def append_audit(self, entry: Json) -> Json: ...
    def list_audit(self, filters: Json, cursor: str | None, limit: int) -> Page: ...


__all__ = ["Store", "Page", "AppendResult", "BatchSelection", "KeyRecord", "ClaimKey", "Json", "ACTIONS", "VIAS",
           "audit_entry"]
