"""``create_trajectory(session_key=True)`` in the sync and async clients answers a key bound to the new
trajectory (a real server in a thread for the sync client; the app in-process for the async one)."""

from __future__ import annotations

from pathlib import Path

from steplake import AsyncClient, Client
from tests.api.servers import asgi_client, make_app, threaded_server


def test_sync_client_mints_a_session_key(tmp_path: Path) -> None:
    with threaded_server(tmp_path) as (url, app), Client(url) as c:
        t = c.create_trajectory("s1", group_id="sg", channel="val", metadata={"task": "k"}, session_key=True)
        assert t["trajectory_id"] == "s1" and t["api_key"].startswith("sl-agent-")
        rec = app.state.store.lookup_key(t["api_key"])
        assert rec.key_id == t["key_id"] and rec.scope == "agent"
        assert rec.binding == {"trajectory_id": "s1", "group_id": "sg", "channel": "val", "metadata": {"task": "k"}}
        assert "api_key" not in c.create_trajectory("s2")
        assert c.stats() is not None  # the server is still open for keyless callers


async def test_async_client_mints_a_session_key(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with asgi_client(app) as http:
        ac = AsyncClient("http://testserver", transport=http._transport)
        t = await ac.create_trajectory(session_key=True)
        assert app.state.store.lookup_key(t["api_key"]).binding == {"trajectory_id": t["trajectory_id"]}
        await ac.aclose()
