"""Message search (``q``) on both stores: indexed text, what it covers, deletes, and indexing old pools."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from steplake.records import Step, StepResponse
from steplake.store.encode import search_text
from steplake.store.sqlite import SqliteStore
from tests.conftest import PG_URL, make_store

P = list(range(100, 140))


def step(tid: str, i: int, messages: list[dict[str, Any]], answer: str | None = None,
         calls: list[dict[str, Any]] | None = None) -> Step:
    return Step(step_id=f"{tid}-{i}", trajectory_id=tid, step_index=i, prompt_ids=P + [i] * i, response_ids=[1, 2],
                messages=messages, response=StepResponse(content=answer, tool_calls=calls))


def found(store: Any, q: str, **filters: Any) -> list[str]:
    return sorted(t["trajectory_id"] for t in store.list_trajectories({"q": q, **filters}, None, 100).items)


def test_search_text_covers_new_messages_and_the_answer() -> None:
    history = [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": [{"type": "text", "text": "What is 17*23?"}]},
               {"role": "assistant", "content": None,
                "tool_calls": [{"id": "c1", "function": {"name": "calculator", "arguments": '{"x": "17*23"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "391"}]
    assert search_text(history[:2], {"content": None, "tool_calls": history[2]["tool_calls"]}) == \
        'You are terse.\nWhat is 17*23?\ncalculator\n{"x": "17*23"}'
    # a later step indexes what arrived since the model's last turn, not the whole history again
    assert search_text(history, {"content": "It is 391.", "reasoning": "multiply"}) == "391\nIt is 391.\nmultiply"
    assert search_text(None, None) == ""


def test_search_finds_substrings_case_insensitively_in_messages_only(store: Any) -> None:
    store.append_steps([
        step("a", 0, [{"role": "user", "content": "Feed the Zebra at noon"}], "Done: zebra fed."),
        step("b", 0, [{"role": "user", "content": "Count the yaks"}], None,
             [{"id": "c", "function": {"name": "counter_tool", "arguments": '{"animal": "yak"}'}}]),
        step("c", 0, [{"role": "user", "content": "100% sure? use a_b"}], "ok"),
    ])
    assert found(store, "zebra") == ["a"]
    assert found(store, "ZEB") == ["a"]                   # substring, any case
    assert found(store, "counter_t") == ["b"]            # tool-call names and arguments
    assert found(store, "fed.") == ["a"]                 # the response text
    assert found(store, "yak") == ["b"]
    assert found(store, "ak") == ["b"]                   # shorter than a trigram
    assert found(store, "0%") == ["c"] and found(store, "a_b") == ["c"]  # LIKE wildcards are literal
    assert found(store, "%") == ["c"] and found(store, "_") == ["b", "c"]
    assert found(store, '"animal": "yak"') == ["b"] and found(store, 'say "hi"') == []  # quotes are literal
    assert found(store, "role") == [] and found(store, "content") == []  # JSON keys are not text
    assert found(store, "zebra", status="complete") == []  # combines with other filters


def test_a_nul_in_a_message_is_stored_and_searchable_around(store: Any) -> None:
    """PostgreSQL text cannot hold NUL and FTS5 strings end at it: the index drops it, the step is kept."""
    store.append_steps([step("z", 0, [{"role": "user", "content": "before\x00after"}], "done")])
    assert store.get_trajectory("z")["steps"][0]["messages"][0]["content"] == "before\x00after"
    assert found(store, "beforeafter") == ["z"] and found(store, "done") == ["z"]


def test_later_steps_and_deleted_trajectories(store: Any) -> None:
    h0 = [{"role": "user", "content": "Plan the trip to Lisbon"}]
    h1 = [*h0, {"role": "assistant", "content": "Which dates?"}, {"role": "user", "content": "Early March"}]
    store.append_steps([step("t", 0, h0, "Which dates?"), step("t", 1, h1, "Booked for March 3rd")])
    assert found(store, "lisbon") == ["t"] and found(store, "early march") == ["t"]
    assert found(store, "march 3rd") == ["t"] and found(store, "which dates") == ["t"]
    assert store.delete_trajectory("t")
    assert found(store, "lisbon") == []


def test_a_first_step_and_a_fork_index_the_history_they_carry(store: Any) -> None:
    """An agent's first call may carry many turns (automatic attribution opens a trajectory for it), and a
    fork rewrites the history: no earlier step holds those messages, so these steps index them."""
    h = [{"role": "system", "content": "Guide for Quillborough"},
         {"role": "user", "content": "Visit the Marmalade lighthouse"},
         {"role": "assistant", "content": "Which month, Zephyrine?"},
         {"role": "user", "content": "Octember"}]
    store.append_steps([step("h", 0, h, "Booked")])
    for w in ["quillborough", "marmalade", "zephyrine", "octember", "booked"]:
        assert found(store, w) == ["h"], w
    compacted = [{"role": "user", "content": "Summary: a Brindlewick trip"}, {"role": "assistant", "content": "Noted"},
                 {"role": "user", "content": "Go on"}]
    fork = Step(step_id="h-1", trajectory_id="h", step_index=1, prompt_ids=[7] * 30, response_ids=[1],
                messages=compacted, response=StepResponse(content="Done"))
    store.append_steps([fork])
    assert store.get_trajectory("h")["steps"][1]["continuity"] == "fork"
    assert found(store, "brindlewick") == ["h"] and found(store, "noted") == ["h"]


def test_indexed_text_keeps_the_steps_own_text_whole() -> None:
    from steplake.store.encode import MAX_SEARCH_CHARS, indexed_text

    h = [{"role": "user", "content": "x" * MAX_SEARCH_CHARS}, {"role": "assistant", "content": "ok"},
         {"role": "user", "content": "last words"}]
    own = search_text(h, {"content": "the answer"})
    assert own == "last words\nthe answer"
    assert indexed_text(own, h, "clean") == own
    text = indexed_text(own, h, "first")
    assert len(text) == MAX_SEARCH_CHARS and text.startswith("xxx") and text.endswith("\n" + own)


def test_a_pool_from_before_the_index_is_indexed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    s = SqliteStore(db)
    s.open()
    s.append_steps([step("old", 0, [{"role": "user", "content": "legacy walrus question"}], "walrus answer")])
    s.append_steps([step("hist", 0, [{"role": "user", "content": "old narwhal"}, {"role": "assistant", "content": "a"},
                                     {"role": "user", "content": "b"}], "c")])
    s.close()
    with sqlite3.connect(db) as c:  # back to schema v2, the last one without the text index
        c.execute("DROP TABLE step_text")
        c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    s = SqliteStore(db)
    s.open()
    try:
        assert found(s, "walrus") == ["old"] and found(s, "legacy") == ["old"]
        assert found(s, "narwhal") == ["hist"]  # a first step's history too
    finally:
        s.close()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")
def test_a_postgres_pool_from_before_the_index_is_indexed_on_open(tmp_path: Path) -> None:
    import uuid

    import psycopg

    url = PG_URL
    assert url
    from steplake.store.postgres import PostgresStore, connect_kwargs

    schema = f"t_search_{uuid.uuid4().hex[:8]}"
    s = PostgresStore(url, schema=schema, drop_schema_on_close=False)
    s.open()
    s.append_steps([step("old", 0, [{"role": "user", "content": "legacy walrus question"}], "walrus answer")])
    s.append_steps([step("hist", 0, [{"role": "user", "content": "old narwhal"}, {"role": "assistant", "content": "a"},
                                     {"role": "user", "content": "b"}], "c")])
    s.close()
    with psycopg.connect(s.url, **connect_kwargs(schema)) as c:  # back to schema v1, without the text table
        c.execute("DROP TABLE step_text")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    s = PostgresStore(url, schema=schema, drop_schema_on_close=True)
    s.open()
    try:
        assert found(s, "walrus") == ["old"] and found(s, "LEGACY") == ["old"] and found(s, "narwhal") == ["hist"]
        # the trigram index exists when pg_trgm can be created (CI's database allows it)
        assert s._tx(lambda tx: tx.one("SELECT count(*) FROM pg_indexes WHERE indexname = 'step_text_trgm'"
                                       " AND schemaname = current_schema()"))[0] == 1
    finally:
        s.close()


def test_common_terms_walk_the_trajectories_with_the_same_answers(tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    """A term in many steps is answered by walking trajectories newest first; the pages are the same as
    collecting every match, also when the walk runs out of time and falls back."""
    import steplake.store.sqlite as sq

    s = SqliteStore(tmp_path / "pool.db")
    s.open()
    try:
        for t in range(30):
            s.append_steps([step(f"w{t}", 0, [{"role": "user", "content": f"Task {t}: use the Calculator"}],
                                 f"result {t * 7}")])

        def pages(q: str) -> list[list[str]]:
            out, cur = [], None
            while True:
                page = s.list_trajectories({"q": q}, cur, 4)
                out.append([t["trajectory_id"] for t in page.items])
                if (cur := page.next_cursor) is None:
                    return out
        queries = ["calculator", "result 1", "task 2", "CALC", "nothing here"]
        collected = {q: pages(q) for q in queries}
        assert sum(map(len, collected["calculator"])) == 30 and collected["task 2"][0][0] == "w29"
        monkeypatch.setattr(sq, "DENSE_MATCHES", 2)
        assert {q: pages(q) for q in queries} == collected
        monkeypatch.setattr(sq, "DENSE_BUDGET_S", 0.0)  # every walk is cut short and falls back
        monkeypatch.setattr(sq, "DENSE_CHECK_EVERY", 1)
        cut = []
        page_rows = SqliteStore._page_rows

        def spy(*a: Any, **kw: Any) -> Any:
            rows = page_rows(*a, **kw)
            cut.append(rows is None)
            return rows
        monkeypatch.setattr(SqliteStore, "_page_rows", staticmethod(spy))
        assert {q: pages(q) for q in queries} == collected
        assert any(cut)
    finally:
        s.close()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")
def test_postgres_walk_falls_back_to_the_index_when_out_of_time(tmp_path: Path, monkeypatch: Any) -> None:
    import steplake.store.postgres_reads as pr

    store = make_store("postgres", tmp_path)
    store.open()
    try:
        for t in range(12):
            store.append_steps([step(f"p{t}", 0, [{"role": "user", "content": f"Task {t}: use the Calculator"}])])
        want = found(store, "calculator")
        assert len(want) == 12 and found(store, "task 1") == ["p1", "p10", "p11"]
        # every probe of the walk now sleeps past the budget: the answer comes from the indexed plan, unchanged
        monkeypatch.setattr(pr, "PG_DENSE_TEXT_SQL", "pg_sleep(0.2) IS NOT NULL AND " + pr.PG_DENSE_TEXT_SQL)
        t0 = time.monotonic()
        assert found(store, "calculator") == want and found(store, "task 1") == ["p1", "p10", "p11"]
        assert time.monotonic() - t0 < 2
    finally:
        store.close()
