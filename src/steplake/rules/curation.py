"""Curation merges: what a curation change does to a step or trajectory, and metadata merges.

A change sets ``quality``, ``trainable`` and ``note`` when given; ``tags_add`` appends the tags not present
yet (in order, once), then ``tags_remove`` drops every occurrence of its tags. The history keeps the change
as given and the state before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import CurationIn

CHANGE_FIELDS = {"quality", "trainable", "tags_add", "tags_remove", "note"}


@dataclass(frozen=True)
class CurationState:
    """The curated fields of one step or trajectory."""

    quality: str
    trainable: bool
    tags: list[str]
    note: str | None

    @classmethod
    def stored(cls, quality: str, trainable: object, tags: object, note: str | None) -> CurationState:
        """The state as a store holds it: ``trainable`` an integer, ``tags`` the decoded JSON list (or None)."""
        return cls(quality, bool(trainable), [str(t) for t in tags] if isinstance(tags, list) else [], note)

    def as_record(self) -> dict[str, Any]:
        return {"quality": self.quality, "trainable": self.trainable, "tags": list(self.tags), "note": self.note}


def merge_tags(tags: Sequence[str], add: Sequence[str] | None, remove: Sequence[str] | None) -> list[str]:
    out = list(tags)
    for t in add or []:
        if t not in out:
            out.append(t)
    gone = set(remove or [])
    return [t for t in out if t not in gone]


def apply_curation(state: CurationState, c: CurationIn) -> CurationState:
    """The state after curation ``c``."""
    return CurationState(
        quality=c.quality or state.quality,
        trainable=state.trainable if c.trainable is None else c.trainable,
        tags=merge_tags(state.tags, c.tags_add, c.tags_remove),
        note=state.note if c.note is None else c.note)


def curation_change(c: CurationIn) -> dict[str, Any]:
    """The change as the history and the ``curation`` event record it: the fields given."""
    return c.model_dump(include=CHANGE_FIELDS, exclude_none=True)


def curation_event(c: CurationIn, trajectory_ids: Sequence[str], n: int, change: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """The ``curation`` event of one curation call (at most 100 ids of each kind)."""
    return {"n": n, "step_ids": list(c.step_ids or [])[:100], "trajectory_ids": list(trajectory_ids)[:100],
            "change": dict(change), "reviewer": c.reviewer}


def merge_metadata(current: object, update: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata after ``complete`` with ``update`` (``current``: the decoded stored object, or None): the
    keys of ``update`` replace, the others stay."""
    merged = dict(current) if isinstance(current, Mapping) else {}
    merged.update(update)
    return merged


__all__ = ["CHANGE_FIELDS", "CurationState", "apply_curation", "curation_change", "curation_event", "merge_metadata",
           "merge_tags"]
