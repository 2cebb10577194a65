"""Two ``steplake serve`` processes on one PostgreSQL database (DESIGN §2 Store, issue acceptance):
16 clients spread over both submit steps and take batches; every step answered 2xx is stored once, one
trajectory fed through both servers keeps its order and continuity, no group is leased twice, a trainer
long-polling one server is woken within a second by a group completed through the other, each server's
event feed shows everything, and SIGKILL of one server loses nothing acknowledged while the other serves."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steplake.client import SSEParser
from tests.scale.servers import PG_URL, Server, db_url, servers_on_one_schema

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]
CLIENTS = 16
BASE = list(range(40))


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[str, list[Server]]]:
    with servers_on_one_schema(tmp_path, 2) as pair:
        yield pair


def open_store(schema: str) -> Any:
    from steplake.store.postgres import PostgresStore

    s = PostgresStore(db_url(schema))
    s.open()
    return s


def chain(tid: str, start: int, n: int) -> list[dict[str, Any]]:
    """Steps start..start+n-1 of a clean trajectory: each prompt extends the previous prompt + response."""
    out = []
    for i in range(start, start + n):
        prompt = BASE + [5, 6, 7, 8] * i
        out.append({"step_id": f"{tid}-{i}", "trajectory_id": tid, "step_index": i, "prompt_ids": prompt,
                    "response_ids": [5, 6, 7], "response_logprobs": [-0.1, -0.2, -0.3]})
    return out


def post(c: httpx.Client, url: str, path: str, body: Any) -> httpx.Response:
    return c.post(f"{url}/api/v1{path}", json=body, timeout=30)


def test_clients_and_trainers_spread_over_two_servers(two: tuple[str, list[Server]]) -> None:
    schema, (s1, s2) = two
    urls = [s1.url, s2.url]
    acked: set[str] = set()
    lock = threading.Lock()
    leases: list[tuple[str, list[str]]] = []
    failures: list[str] = []
    done = threading.Event()

    def client(k: int) -> None:
        rnd = random.Random(k)
        with httpx.Client() as c:
            for r in range(3):
                tid, gid = f"c{k}-r{r}", f"g{k // 2}-r{r}"  # clients k and k^1 share a group of 2
                post(c, rnd.choice(urls), "/trajectories", {"trajectory_id": tid, "group_id": gid, "group_size": 2})
                for req in range(4):  # each request to either server: one trajectory through both
                    resp = post(c, rnd.choice(urls), "/steps", {"steps": chain(tid, req * 3, 3)})
                    if resp.status_code // 100 != 2:
                        failures.append(f"{resp.status_code} {resp.text[:200]}")
                        continue
                    with lock:
                        acked.update(f"{tid}-{i}" for i in range(req * 3, req * 3 + 3))
                post(c, rnd.choice(urls), f"/trajectories/{tid}/complete", {"reward": float(k % 3)})

    def trainer(k: int) -> None:
        with httpx.Client() as c:
            while True:
                r = post(c, urls[k % 2], "/batches", {"channel": "train", "groups": 2, "wait_seconds": 1,
                                                       "lease_seconds": 300})
                assert r.status_code == 200, r.text
                b = r.json()
                if b["groups"]:
                    with lock:
                        leases.append((b["batch_id"], [g["group_id"] for g in b["groups"]]))
                    assert post(c, urls[(k + 1) % 2], f"/batches/{b['batch_id']}/ack", {}).status_code == 200
                elif done.is_set():
                    return

    trainers = [threading.Thread(target=trainer, args=(k,)) for k in range(4)]
    clients = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in trainers + clients:
        t.start()
    for t in clients:
        t.join(120)
    done.set()
    for t in trainers:
        t.join(60)
    assert failures == []
    leased = [g for _, gs in leases for g in gs]
    assert len(leased) == len(set(leased)), "a group was leased to two trainers"
    assert sorted(leased) == sorted(f"g{k}-r{r}" for k in range(CLIENTS // 2) for r in range(3))
    store = open_store(schema)
    try:
        assert store.stats()["steps"] == len(acked) == CLIENTS * 3 * 12
        for k in range(CLIENTS):
            steps = store.get_trajectory(f"c{k}-r0")["steps"]
            assert [s["step_index"] for s in steps] == list(range(12))
            assert [s["continuity"] for s in steps] == ["first"] + ["clean"] * 11
            assert [s["prompt_ids"] for s in steps] == [s["prompt_ids"] for s in chain(f"c{k}-r0", 0, 12)]
    finally:
        store.close()


def test_long_poll_on_one_server_is_woken_by_the_other(two: tuple[str, list[Server]]) -> None:
    _, (s1, s2) = two
    got: dict[str, Any] = {}

    def trainer() -> None:
        with httpx.Client() as c:
            r = post(c, s1.url, "/batches", {"channel": "wake", "groups": 1, "wait_seconds": 20})
            got["at"] = time.monotonic()
            got["body"] = r.json()

    t = threading.Thread(target=trainer)
    t.start()
    time.sleep(1.0)  # the trainer is waiting on server 1
    with httpx.Client() as c:
        steps = chain("w", 0, 1)
        steps[0]["channel"] = "wake"
        assert post(c, s2.url, "/steps", {"steps": steps}).status_code == 200
        assert post(c, s2.url, "/trajectories/w/complete", {"reward": 1.0}).status_code == 200
        completed = time.monotonic()
    t.join(25)
    assert [g["group_id"] for g in got["body"]["groups"]] == ["w"]
    assert got["at"] - completed < 1.0, f"woken after {got['at'] - completed:.2f}s"


def read_feed(url: str, until_id: int) -> list[int]:
    ids: list[int] = []
    parser = SSEParser()
    with httpx.stream("GET", f"{url}/api/v1/events", params={"heartbeat": 1},
                      headers={"last-event-id": "0"}, timeout=httpx.Timeout(10.0)) as r:
        for line in r.iter_lines():
            ev = parser.feed(line)
            if ev is not None and ev.get("id") is not None:
                ids.append(int(ev["id"]))
                if ids[-1] >= until_id:
                    return ids
    return ids


def test_each_servers_event_feed_shows_everything(two: tuple[str, list[Server]]) -> None:
    schema, (s1, s2) = two
    with httpx.Client() as c:
        for i in range(6):
            assert post(c, (s1, s2)[i % 2].url, "/steps", {"steps": chain(f"f{i}", 0, 2)}).status_code == 200
        assert post(c, s1.url, "/curation", {"trajectory_ids": ["f1"], "quality": "good"}).status_code == 200
    store = open_store(schema)
    try:
        everything = [e["id"] for e in store.read_events(0, 10_000)]
    finally:
        store.close()
    assert read_feed(s1.url, everything[-1]) == everything
    assert read_feed(s2.url, everything[-1]) == everything


def test_sigkill_of_one_server_loses_nothing_and_the_other_serves(two: tuple[str, list[Server]]) -> None:
    schema, (s1, s2) = two
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client() as c:
            req = 0
            while not stop.is_set() and req < 200:
                steps = chain(f"k{k}", req * 2, 2)
                for url in ((s1.url, s2.url) if k % 2 else (s2.url, s1.url)):
                    try:
                        r = post(c, url, "/steps", {"steps": steps})
                    except httpx.TransportError:
                        continue  # that server is gone: the same request through the other one
                    if r.status_code == 200:
                        with lock:
                            acked.update(s["step_id"] for s in steps)
                        break
                req += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    s1.proc.send_signal(signal.SIGKILL)
    s1.proc.wait(10)
    killed_at = len(acked)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acked) > killed_at, "the surviving server stopped serving"
    store = open_store(schema)
    try:
        stored = {s["step_id"] for k in range(CLIENTS) for s in store.get_trajectory(f"k{k}")["steps"]}
        assert acked <= stored, f"lost {len(acked - stored)} acknowledged steps"
        assert store.stats()["steps"] == len(stored)
        for k in range(CLIENTS):  # order and continuity survive the kill (no half request stored)
            steps = store.get_trajectory(f"k{k}")["steps"]
            assert [s["step_index"] for s in steps] == list(range(len(steps)))
            assert all(s["continuity"] == "clean" for s in steps[1:])
    finally:
        store.close()
    with httpx.Client() as c:
        assert post(c, s2.url, "/steps", {"steps": chain("after", 0, 1)}).status_code == 200
