"""rules.curation: what a curation change does, and metadata merges."""

from __future__ import annotations

from steplake.records import CurationIn
from steplake.rules.curation import (
    CurationState,
    apply_curation,
    curation_change,
    curation_event,
    merge_metadata,
    merge_tags,
)


def test_merge_tags_adds_once_in_order_then_removes() -> None:
    assert merge_tags(["a", "b"], ["c", "a", "c", "d"], None) == ["a", "b", "c", "d"]
    assert merge_tags(["a", "b", "a"], None, ["a"]) == ["b"]
    assert merge_tags(["a"], ["b"], ["b"]) == ["a"]  # removal wins over an add in the same change
    assert merge_tags([], None, None) == []


def test_apply_keeps_what_is_not_given() -> None:
    before = CurationState.stored("good", 1, ["x"], "n")
    c = CurationIn(trajectory_ids=["t"], tags_add=["y"], reviewer="ann")
    after = apply_curation(before, c)
    assert after == CurationState("good", True, ["x", "y"], "n")
    c = CurationIn(trajectory_ids=["t"], quality="bad", trainable=False, note="", tags_remove=["x"])
    assert apply_curation(before, c) == CurationState("bad", False, [], "")
    assert before.as_record() == {"quality": "good", "trainable": True, "tags": ["x"], "note": "n"}


def test_stored_state_decodes_missing_tags() -> None:
    assert CurationState.stored("unreviewed", 0, None, None) == CurationState("unreviewed", False, [], None)


def test_change_and_event_record_what_was_given() -> None:
    c = CurationIn(step_ids=[f"s{i}" for i in range(150)], trainable=False, reviewer="bo")
    assert curation_change(c) == {"trainable": False}
    ev = curation_event(c, ["t"], 151, curation_change(c))
    assert ev["n"] == 151 and len(ev["step_ids"]) == 100 and ev["trajectory_ids"] == ["t"]
    assert ev["change"] == {"trainable": False} and ev["reviewer"] == "bo"


def test_merge_metadata() -> None:
    assert merge_metadata({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}
    assert merge_metadata(None, {"c": 4}) == {"c": 4}
