"""GET /api/v1/events over a real socket (uvicorn in a thread): kinds, live delivery, resume."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steplake.client import Client, SSEParser
from tests.api.helpers import step, stream_events_until_end
from tests.api.servers import threaded_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with threaded_server(tmp_path) as (url, _app):
        yield url


def read_events(url: str, n: int, headers: dict[str, str] | None = None, **params: object) -> list[dict]:
    out: list[dict] = []
    parser = SSEParser()
    with httpx.stream("GET", f"{url}/api/v1/events", params={"heartbeat": 1, **params}, headers=headers,
                      timeout=httpx.Timeout(5.0)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            ev = parser.feed(line)
            if ev is not None:
                out.append(ev)
                if len(out) >= n:
                    break
    return out


def test_events_kinds_and_resume(live: str) -> None:
    with Client(live) as c:
        c.create_trajectory("e1")
        c.submit_steps([step("e1", 0, [1, 2], [3], step_id="es0")])
        c.complete("e1", reward=1.0)
        c.curate(trajectory_ids=["e1"], quality="good")
    events = read_events(live, 6, last_event_id=0)
    kinds = {e["kind"] for e in events}
    assert {"trajectory", "step", "curation"} <= kinds, kinds
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    step_event = next(e for e in events if e["kind"] == "step")
    assert step_event["data"]

    resumed = read_events(live, 2, headers={"last-event-id": str(ids[1])})
    assert [e["id"] for e in resumed] == ids[2:4]
    only_curation = read_events(live, 1, last_event_id=0, kinds="curation")
    assert only_curation[0]["kind"] == "curation"


def test_live_delivery_and_heartbeats(live: str) -> None:
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        parser = SSEParser()
        with httpx.stream("GET", f"{live}/api/v1/events", params={"kinds": "step", "heartbeat": 0.5},
                          timeout=httpx.Timeout(10.0)) as r:
            for line in r.iter_lines():
                if line.startswith(":"):
                    ready.set()
                ev = parser.feed(line)
                if ev is not None:
                    got.append(ev)
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    with Client(live) as c:
        c.submit_steps([step("e2", 0, [1], [2], step_id="live0")])
    t.join(10)
    assert got and got[0]["kind"] == "step"


def test_bad_last_event_id(live: str) -> None:
    r = httpx.get(f"{live}/api/v1/events", headers={"last-event-id": "abc"})
    assert r.status_code == 422 and "Last-Event-ID" in r.json()["error"]["message"]




def test_revoked_key_ends_its_stream(tmp_path: Path) -> None:
    """A key revoked elsewhere (``steplake keys revoke``: another store on the same file) ends the streams it
    opened within 5 s, with an ``error`` event; a key revoked through this server's API too."""
    from steplake.store.sqlite import SqliteStore

    with threaded_server(tmp_path) as (url, _app):
        admin = httpx.post(f"{url}/api/v1/keys", json={"scope": "admin"}).json()["secret"]
        auth = {"authorization": f"Bearer {admin}"}
        trainers = [httpx.post(f"{url}/api/v1/keys", json={"scope": "trainer"}, headers=auth).json()
                    for _ in range(2)]
        for revoke in ("outside", "api"):
            key = trainers.pop()
            opened, out = threading.Event(), {}
            t = threading.Thread(target=stream_events_until_end, args=(url, key["secret"], opened, out), daemon=True)
            t.start()
            assert opened.wait(10) and out["status"] == 200
            time.sleep(1.0)  # the stream has checked its key once at least (and the lookup is cached)
            revoked_at = time.monotonic()
            if revoke == "outside":
                other = SqliteStore(tmp_path / "pool.db")
                other.open()
                assert other.revoke_key(key["key_id"])
                other.close()
            else:
                assert httpx.delete(f"{url}/api/v1/keys/{key['key_id']}", headers=auth).status_code == 200
            t.join(10)
            assert not t.is_alive() and out["ended_at"] - revoked_at < 5.0, revoke
            assert out["events"][-1]["kind"] == "error" and out["events"][-1]["id"] is None
            assert out["events"][-1]["data"]["error"]["code"] == "key_revoked"
        # the admin key still streams (rechecked every second: heartbeats keep coming, no error)
        lines: list[str] = []
        with httpx.stream("GET", f"{url}/api/v1/events", params={"heartbeat": 0.5}, headers=auth,
                          timeout=httpx.Timeout(10.0)) as r:
            assert r.status_code == 200
            started = time.monotonic()
            for line in r.iter_lines():
                lines.append(line)
                if time.monotonic() - started > 2.5:
                    break
        assert lines.count(": heartbeat") >= 3 and not any(x.startswith("event: error") for x in lines)
