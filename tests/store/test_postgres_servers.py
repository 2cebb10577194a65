"""Several servers on one PostgreSQL database, at the store level: two PostgresStore instances on one
schema stand for two ``steplake serve`` processes (tests/scale/ runs real processes)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from steplake.records import BatchIn, Step

PG_URL = os.environ.get("STEPLAKE_TEST_PG_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]
P = list(range(100, 140))


@pytest.fixture
def pair() -> Iterator[tuple[Any, Any]]:
    from steplake.store.postgres import PostgresStore

    assert PG_URL
    schema = f"t_{uuid.uuid4().hex[:12]}"
    a = PostgresStore(PG_URL, schema=schema, drop_schema_on_close=True)
    b = PostgresStore(PG_URL, schema=schema)
    a.open()
    b.open()
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def step(tid: str, i: int | None, prompt: list[int], resp: list[int], **kw: Any) -> Step:
    sid = kw.pop("step_id", f"{tid}-{i}")
    return Step(step_id=sid, trajectory_id=tid, step_index=i, prompt_ids=prompt, response_ids=resp, **kw)


def test_same_steps_through_both_servers_are_stored_once(pair: tuple[Any, Any]) -> None:
    a, b = pair
    steps = [step(f"t{k % 10}", k // 10, P + [k], [k]) for k in range(200)]

    def post(seed: int) -> None:
        rnd = random.Random(seed)
        order = list(range(0, 200, 8))
        rnd.shuffle(order)
        for k in order:
            rnd.choice([a, b]).append_steps(steps[k:k + 8])

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(post, range(8)))
    assert a.stats()["steps"] == 200 == b.stats()["steps"]
    for t in range(10):
        got = b.get_trajectory(f"t{t}")["steps"]
        assert [s["step_index"] for s in got] == list(range(20))
        assert [s["parent_step_id"] for s in got] == [None] + [f"t{t}-{i}" for i in range(19)]


def test_one_trajectory_alternating_servers_keeps_order_and_continuity(pair: tuple[Any, Any]) -> None:
    a, b = pair
    seq = list(P)
    for i in range(12):
        resp = [1000 + i, 1001 + i]
        (a if i % 2 == 0 else b).append_steps([step("alt", i, list(seq), resp)])
        seq = seq + resp + [7]
    got = a.get_trajectory("alt")["steps"]
    assert [s["continuity"] for s in got] == ["first"] + ["clean"] * 11
    assert got[-1]["prompt_ids"] == seq[:-3]
    assert a.get_trajectory("alt", with_steps=False)["n_steps"] == 12


def test_gateway_captures_from_both_servers_get_distinct_indices(pair: tuple[Any, Any]) -> None:
    a, b = pair
    errors: list[BaseException | None] = []
    done = threading.Event()
    lock = threading.Lock()

    def cb(err: BaseException | None) -> None:
        with lock:
            errors.append(err)
            if len(errors) == 60:
                done.set()

    def capture(k: int) -> None:
        (a if k % 2 else b).submit_steps([step("cap", None, P + [k], [k], step_id=f"cap-{k}")], cb)

    with ThreadPoolExecutor(6) as ex:
        list(ex.map(capture, range(60)))
    assert done.wait(30) and errors == [None] * 60
    got = b.get_trajectory("cap")["steps"]
    assert [s["step_index"] for s in got] == list(range(60))
    assert [s["parent_step_id"] for s in got[1:]] == [s["step_id"] for s in got[:-1]]
    for s in got:  # full ids whatever the parent turned out to be
        k = int(s["step_id"].split("-")[1])
        assert s["prompt_ids"] == P + [k] and s["response_ids"] == [k]


def _ready_groups(store: Any, n: int) -> None:
    for g in range(n):
        tids = [f"g{g}-{i}" for i in range(2)]
        store.create_group(f"g{g}", 2, "train", {}, tids)
        store.append_steps([step(t, 0, P, [i]) for i, t in enumerate(tids)])
        for i, t in enumerate(tids):
            store.complete_trajectory(t, float(i))


def test_a_group_is_leased_to_one_trainer(pair: tuple[Any, Any]) -> None:
    a, b = pair
    _ready_groups(a, 30)
    leased: list[str] = []
    lock = threading.Lock()

    def trainer(k: int) -> None:
        store = a if k % 2 else b
        while True:
            sel = store.select_batch(BatchIn(groups=2, lease_seconds=60))
            if not sel.groups:
                return
            with lock:
                leased.extend(g["group_id"] for g in sel.groups)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(trainer, range(8)))
    assert sorted(leased) == sorted(f"g{g}" for g in range(30))
    assert b.stats()["groups"]["leased"] == 30


def test_event_feed_never_skips_under_concurrent_writers(pair: tuple[Any, Any]) -> None:
    a, b = pair
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        cursor = 0
        while not stop.is_set() or cursor < b.last_event_id():
            for e in b.read_events(cursor, 1000):
                seen.append(e["id"])
                cursor = e["id"]

    reader = threading.Thread(target=follow)
    reader.start()

    def write(k: int) -> None:
        store = a if k % 2 else b
        for i in range(15):
            store.append_steps([step(f"ev{k}", i, P + [i], [i])])

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(write, range(8)))
    stop.set()
    reader.join(30)
    everything = [e["id"] for e in a.read_events(0, 100_000)]
    assert seen == everything
    assert sum(1 for e in a.read_events(0, 100_000) if e["kind"] == "step") == 120


def test_commit_on_one_server_wakes_the_other(pair: tuple[Any, Any]) -> None:
    a, b = pair
    woke = threading.Event()
    a.on_commit = woke.set
    time.sleep(0.5)  # the listener is connected
    woke.clear()
    t0 = time.monotonic()
    b.append_steps([step("wake", 0, P, [1])])
    assert woke.wait(1.0), "no NOTIFY reached the other server within a second"
    assert time.monotonic() - t0 < 1.0


def test_policy_published_elsewhere_tags_new_steps(pair: tuple[Any, Any]) -> None:
    a, b = pair
    a.publish_policy(4, None, None)
    b.append_steps([step("pv", 0, P, [1])])
    assert b.get_step("pv-0")["policy_version"] == 4 and b.get_policy()["version"] == 4


def test_concurrent_sweeps_transition_each_trajectory_once(pair: tuple[Any, Any]) -> None:
    a, b = pair
    a.create_group("sw", 20, "train", {}, [f"sw{i}" for i in range(20)])
    a.append_steps([step(f"sw{i}", 0, P, [1], finish_reason="stop") for i in range(20)])
    later = time.time() + 1000
    with ThreadPoolExecutor(4) as ex:
        counts = list(ex.map(lambda s: s.sweep_idle(300, now=later), [a, b, a, b]))
    assert sum(counts) == 20
    g = b.get_group("sw")
    assert (g["status"], g["n_complete"], g["n_abandoned"]) == ("ready", 20, 0)
