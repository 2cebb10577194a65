"""steplake.client against a real server (uvicorn in a thread; ASGI transport for the async client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steplake import AsyncClient, Client, errors
from steplake.records import Step
from tests.api.helpers import step
from tests.api.servers import asgi_client, make_app, threaded_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with threaded_server(tmp_path) as (url, _app):
        yield url


def test_sync_client_round_trip(live: str) -> None:
    with Client(live) as c:
        g = c.create_group(2, group_id="cg")
        tids = [t["trajectory_id"] for t in g["trajectories"]]
        c.submit_steps([Step(trajectory_id=tids[0], step_index=0, prompt_ids=[1, 2], response_ids=[3],
                             response_logprobs=[-0.1], step_id="cs0")])
        c.submit_steps([step(tids[1], 0, [1, 2], [4], step_id="cs1")])
        c.complete(tids[0], reward=1.0)
        c.complete(tids[1], reward=0.0)
        assert c.get_trajectory(tids[0])["status"] == "complete"
        assert c.get_trajectory("missing") is None
        assert c.get_step("cs0")["response_ids"] == [3]
        assert c.get_group("cg")["status"] == "ready"
        assert len(list(c.iter_trajectories(limit=1))) == 2
        assert sorted(s["step_id"] for s in c.iter_steps(group_id="cg", limit=1, fields="meta")) == ["cs0", "cs1"]
        assert c.list_groups(status="ready")["items"][0]["group_id"] == "cg"
        c.add_reward("bonus", 0.5, trajectory_id=tids[0])
        assert c.curate(step_ids=["cs1"], tags_add=["x"])["updated"] == 1
        assert c.curation_history("cs1")
        c.add_feedback("comment", "nice", step_id="cs0")

        batch = c.fetch_batch(groups=1, recipe="grpo", tensors="numpy")
        assert batch["batch_id"] and batch["tensors"]["input_ids"].shape[0] == 2
        c.ack(batch["batch_id"])
        assert c.get_batch(batch["batch_id"]) is not None
        assert c.publish_policy(1, note="first")["version"] == 1
        assert c.get_policy()["version"] == 1
        assert c.stats()["steps"] == 2
        c.delete_trajectory(tids[1])
        assert c.get_trajectory(tids[1]) is None

        events = c.events(last_event_id=0, kinds=["step"])
        assert next(events)["kind"] == "step"
        events.close()  # type: ignore[attr-defined]


def test_errors_are_rebuilt(live: str) -> None:
    with Client(live) as c:
        with pytest.raises(errors.ValidationError) as e422:
            c.submit_steps([step("x", 0, [1], [2, 3], response_logprobs=[-0.1])])
        assert "align" in e422.value.message and e422.value.code == "validation_error"
        with pytest.raises(errors.NotFoundError):
            c.complete("missing")
        c.publish_policy(5)
        with pytest.raises(errors.ConflictError):
            c.publish_policy(4)
        with pytest.raises(errors.ValidationError):
            c.list_trajectories(limit=5000)
    with pytest.raises(errors.ServiceUnavailableError) as down:
        Client("http://127.0.0.1:9", timeout=2).stats()
    assert down.value.code == "connection_error"


def test_api_key_is_sent(live: str) -> None:
    with Client(live) as open_client:
        admin = open_client.create_key("admin")["secret"]  # bootstrap while the server is open
        with pytest.raises(errors.AuthenticationError):
            open_client.stats()
    with Client(live, api_key=admin) as admin_client:
        agent = admin_client.create_key("agent", name="bot")["secret"]
        assert {k["scope"] for k in admin_client.list_keys()} == {"admin", "agent"}
    with Client(live, api_key=agent) as agent_client:
        agent_client.create_trajectory("k1")
        with pytest.raises(errors.PermissionDeniedError):
            agent_client.get_trajectory("k1")


async def test_async_client(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with asgi_client(app) as http:
        ac = AsyncClient("http://testserver", transport=http._transport)  # the app in-process
        t = await ac.create_trajectory("a1", metadata={"agent": "x"})
        assert t["base_url"].endswith("/t/a1/v1")
        await ac.submit_steps([step("a1", 0, [1], [2])])
        assert (await ac.get_trajectory("a1"))["n_steps"] == 1
        assert [x["trajectory_id"] async for x in ac.iter_trajectories(agent="x")] == ["a1"]
        with pytest.raises(errors.NotFoundError):
            await ac.complete("nope")
        await ac.aclose()
