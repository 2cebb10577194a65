"""PostgreSQL restarted (``pg_ctl restart -m fast``) under two ``steplake serve`` processes with reward
functions, clients and SSE readers (issue 15 items 1, 2, 8). The cluster is the test's own (own port and
data directory): the shared test server is never restarted.

After the restart every completed trajectory is scored, those completed after it within 10 s, each once
per function version across both servers; SSE readers resume without a gap; ``/readyz`` reported the
outage and stats count it; no configured secret appears in any answer, event, log line or export."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.scale.restart_kit import (
    SECRETS,
    FakeScorers,
    ReadyPoller,
    SSEReader,
    answer_step,
    fake_scorers,
    own_cluster,
    reward_config,
    servers,
)
from tests.scale.servers import PG_URL, Server

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]


class Load(threading.Thread):
    """Creates, fills and completes trajectories through both servers until stopped; keeps what was answered."""

    def __init__(self, urls: list[str], key: str, name: str) -> None:
        super().__init__(daemon=True)
        self.urls, self.key, self.prefix = urls, key, f"tr-{name}"
        self.completed: dict[str, float] = {}  # trajectory id -> when its completion was answered
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        i = 0
        with httpx.Client(headers=headers, timeout=15) as c:
            while not self.stop.is_set():
                i += 1
                tid, url = f"{self.prefix}-{i}", self.urls[i % 2]
                try:
                    for path, body in ((f"{url}/api/v1/trajectories", {"trajectory_id": tid}),
                                       (f"{url}/api/v1/steps", {"steps": [answer_step(tid)]}),
                                       (f"{self.urls[(i + 1) % 2]}/api/v1/trajectories/{tid}/complete", {})):
                        r = c.post(path, json=body)
                        if r.status_code >= 300 and not (r.status_code == 409 and "complete" not in path):
                            raise httpx.HTTPError(f"{r.status_code} {r.text[:200]}")
                    self.completed[tid] = time.time()
                except httpx.HTTPError:
                    self.failures += 1
                    time.sleep(0.1)
                time.sleep(0.05)


def get(url: str, path: str, key: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{path}", params=params, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r.json()


def wait_scored(url: str, key: str, tids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    left = set(tids)
    while left and time.monotonic() < deadline:
        for tid in sorted(left):
            comps = get(url, f"/api/v1/trajectories/{tid}", key)["reward_components"] or {}
            if {"rm", "judge"} <= set(comps):
                left.discard(tid)
        time.sleep(0.2)
    assert not left, f"{len(left)} trajectories never scored, e.g. {sorted(left)[:5]}"


def all_event_ids(db: str) -> list[int]:
    from steplake.store.postgres import PostgresStore

    store = PostgresStore(db)
    store.open()
    try:
        ids: list[int] = []
        while True:
            page = store.read_events(ids[-1] if ids else 0, 1000)
            if not page:
                return ids
            ids += [e["id"] for e in page]
    finally:
        store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Any, FakeScorers, str, list[Server], dict[str, str]]]:
    from steplake.store.postgres import PostgresStore

    with own_cluster() as pg, fake_scorers() as scorers:
        db = f"{pg.url}?schema=restart"
        store = PostgresStore(db)
        store.open()
        keys = {scope: store.create_key(scope, scope)[1] for scope in ("admin", "trainer")}
        store.close()
        with servers(db, tmp_path, 2, reward_config(scorers.url)) as started:
            yield pg, scorers, db, started, keys


def test_restart_mid_load_scores_once_and_resumes(rig: tuple[Any, FakeScorers, str, list[Server], dict[str, str]]
                                                  ) -> None:
    pg, scorers, db, (a, b), keys = rig
    readers = [SSEReader(s.url, keys["trainer"]) for s in (a, b)]
    pollers = [ReadyPoller(s.url) for s in (a, b)]
    loads = [Load([a.url, b.url], keys["admin"], name) for name in "abc"]
    for t in (*readers, *pollers, *loads):
        t.start()
    time.sleep(3)
    took = pg.restart(until=lambda: all(p.saw_outage() for p in pollers))  # down until both servers said so
    restarted_at = time.time()
    time.sleep(6)
    completed: dict[str, float] = {}
    for load in loads:
        load.stop.set()
        load.join(60)
        completed.update(load.completed)
    for p in pollers:
        p.stop.set()

    after = [tid for tid, at in completed.items() if at > restarted_at]
    assert len(after) >= 5 and len(completed) >= 10, (len(after), len(completed), took)
    wait_scored(a.url, keys["trainer"], after, 10 + 2)
    for tid in after:  # scored within 10 s of the completion (server clocks: the same machine)
        t = get(b.url, f"/api/v1/trajectories/{tid}", keys["trainer"])
        for r in get(b.url, "/api/v1/rewards", keys["trainer"], trajectory_id=tid)["items"]:
            assert r["created_at"] - t["completed_at"] <= 10, (tid, r, t["completed_at"])
    wait_scored(b.url, keys["trainer"], list(completed), 30)  # those cut off by the restart: caught up

    # one score per trajectory and function version across both servers; one call each after the restart
    answers: list[str] = []
    for tid in completed:
        page = get(a.url, "/api/v1/rewards", keys["trainer"], trajectory_id=tid)
        answers.append(str(page))
        pairs = sorted((r["name"], r["version"]) for r in page["items"])
        assert pairs == [("judge", "1"), ("rm", "1")], (tid, page["items"])
        for r in page["items"]:
            assert "params" not in r["details"] and len(r["details"]["config_sha256"]) == 64
    assert all(scorers.rm_calls[t] == 1 and scorers.judge_calls[t] == 1 for t in after), (
        {t: (scorers.rm_calls[t], scorers.judge_calls[t]) for t in after})
    assert not scorers.bad_auth

    # /readyz said why while the database was away; stats count the outage
    assert all(p.saw_outage() for p in pollers), ([Counter((b["checks"].get("store"), b.get("store_error", "")[:60]) for b in p.not_ready) for p in pollers], [p.failed for p in pollers], took)
    for s in (a, b):
        store = get(s.url, "/api/v1/stats", keys["trainer"])["store"]
        assert store["outages"] >= 1 and store["available"] is True, store
        answers.append(str(store))

    # SSE: every event of the log, in order, no gap, no repeat, whatever the outage did to the stream
    time.sleep(2)
    for r in readers:
        r.stop.set()
    expected = all_event_ids(db)
    for r in readers:
        assert r.ids == expected[:len(r.ids)] and len(r.ids) >= len(expected) - 50, (len(r.ids), len(expected))
        assert all(e["data"]["error"]["code"] == "store_unavailable" for e in r.errors), r.errors
    assert any(r.errors or r.ends for r in readers), "no SSE client saw the outage"

    # no configured secret in any answer, event, log line or export
    export = httpx.post(f"{a.url}/api/v1/exports", json={"format": "jsonl", "channel": "train"},
                        headers={"authorization": f"Bearer {keys['trainer']}"}, timeout=60)
    assert export.status_code == 201, export.text
    download = httpx.get(f"{a.url}/api/v1/exports/{export.json()['export_id']}/download",
                         headers={"authorization": f"Bearer {keys['trainer']}"}, timeout=60)
    assert download.status_code == 200
    metrics = httpx.get(f"{b.url}/metrics", headers={"authorization": f"Bearer {keys['trainer']}"}, timeout=30)
    texts = {"answers": "\n".join(answers), "export": download.text, "metrics": metrics.text,
             **{f"sse{i}": r.raw.decode() for i, r in enumerate(readers)},
             **{s.log.name: s.log.read_text(errors="replace") for s in (a, b)}}
    assert "Bearer" in texts["answers"] or "***" in texts["answers"]  # the echoed header was there, masked
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"secret found in {name}"
