"""Two ``steplake serve`` processes on one PostgreSQL schema: a key revoked through server A ends, within
5 s, the event stream it opened on server B (issue 15 item 7)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import stream_events_until_end
from tests.scale.servers import PG_URL, servers_on_one_schema

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")]




def test_key_revoked_on_one_server_ends_its_stream_on_the_other(tmp_path: Path) -> None:
    with servers_on_one_schema(tmp_path, 2) as (_schema, (a, b)):
        admin = httpx.post(f"{a.url}/api/v1/keys", json={"scope": "admin"}, timeout=30).json()["secret"]
        auth = {"authorization": f"Bearer {admin}"}
        trainer = httpx.post(f"{a.url}/api/v1/keys", json={"scope": "trainer"}, headers=auth, timeout=30).json()
        deadline = time.monotonic() + 10
        while httpx.get(f"{b.url}/api/v1/stats", timeout=30).status_code != 401:  # B sees the keys
            assert time.monotonic() < deadline
            time.sleep(0.2)

        opened, out = threading.Event(), {}
        t = threading.Thread(target=stream_events_until_end, args=(b.url, trainer["secret"], opened, out), daemon=True)
        t.start()
        assert opened.wait(10) and out["status"] == 200
        time.sleep(1.5)
        with httpx.Client() as c:  # events keep flowing to B's stream until the revocation
            c.post(f"{a.url}/api/v1/trajectories", json={"trajectory_id": "before"}, headers=auth, timeout=30)
        revoked_at = time.monotonic()
        assert httpx.delete(f"{a.url}/api/v1/keys/{trainer['key_id']}", headers=auth, timeout=30).status_code == 200
        t.join(10)
        assert not t.is_alive(), "the stream outlived its key by 10 s"
        assert out["ended_at"] - revoked_at < 5.0
        events = out["events"]
        assert any(e["kind"] == "trajectory" for e in events)
        assert events[-1]["kind"] == "error" and events[-1]["data"]["error"]["code"] == "key_revoked"
        # reconnecting with the revoked key is refused
        r = httpx.get(f"{b.url}/api/v1/events", headers={"authorization": f"Bearer {trainer['secret']}"}, timeout=30)
        assert r.status_code == 401
