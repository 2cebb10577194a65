"""API keys bound to a session: unmodified OpenAI / Anthropic SDK agents given only a base URL and a key
land in the key's trajectory. Real servers (uvicorn threads, the full app and its auth) in front of the
fake upstream; one open (keyless) server and one with an admin key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fastapi import FastAPI

from steplake.app import create_app
from steplake.config import Settings
from steplake.store.sqlite import SqliteStore
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.procs import serve_app


@dataclass
class Server:
    url: str
    app: FastAPI
    admin: str | None  # the admin key's secret on the server that requires keys

    def headers(self, key: str | None = None) -> dict[str, str]:
        """``key`` None: the admin key (where there is one); "": no key at all."""
        key = self.admin if key is None else key
        return {"authorization": f"Bearer {key}"} if key else {}

    def api(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.headers(key), timeout=10, **kw)

    def mint(self, **body: Any) -> dict[str, Any]:
        r = self.api("POST", "/api/v1/trajectories", json={"session_key": True, **body})
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def steps(self, tid: str) -> list[dict[str, Any]]:
        r = self.api("GET", f"/api/v1/trajectories/{tid}")
        assert r.status_code == 200, r.text
        return list(r.json()["steps"])

    def n_trajectories(self) -> int:
        return len(self.api("GET", "/api/v1/trajectories", params={"limit": 1000}).json()["items"])

    def captures(self) -> dict[str, Any]:
        """The pool's capture counters (a step the store refuses is counted here)."""
        return dict(self.api("GET", "/api/v1/stats").json()["captures"])


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamThread]:
    f = FakeUpstreamThread(free_port()).start()
    yield f
    f.stop()


def _serve(tmp_path: Path, upstream: FakeUpstreamThread, admin: bool) -> Iterator[Server]:
    port = free_port()
    db = tmp_path / "pool.db"
    secret = None
    if admin:  # configured before the server starts, as `steplake keys create --scope admin` would
        store = SqliteStore(db)
        store.open()
        _, secret = store.create_key("admin", "ops")
        store.close()
    settings = Settings(port=port, db=str(db), upstream=[upstream.url], capture_sync=True)
    app = create_app(settings)
    with serve_app(app, port) as url:
        yield Server(url, app, secret)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("open"), upstream, admin=False)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("keyed"), upstream, admin=True)


def oai(server: Server, key: str, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base or f"{server.url}/v1", api_key=key, max_retries=0, timeout=10)


def two_turns(client: openai.OpenAI, first: str, **kw: Any) -> list[str]:
    msgs: list[Any] = [{"role": "user", "content": first}]
    out = client.chat.completions.create(model="m", messages=msgs, **kw)
    msgs += [{"role": "assistant", "content": out.choices[0].message.content}, {"role": "user", "content": "next"}]
    out2 = client.chat.completions.create(model="m", messages=msgs, **kw)
    return [str(out.choices[0].message.content), str(out2.choices[0].message.content)]


def test_openai_sdk_with_a_session_key_lands_in_its_trajectory(open_server: Server) -> None:
    t = open_server.mint(group_id="g-oai", channel="val", metadata={"task": "t9"})
    assert t["api_key"].startswith("sl-agent-") and t["key_id"].startswith("key_")
    assert t["base_url"].endswith(f"/t/{t['trajectory_id']}/v1")  # the existing answer is unchanged
    answers = two_turns(oai(open_server, t["api_key"]), "hello session")
    assert answers == ["echo: hello session", "echo: next"]
    steps = open_server.steps(t["trajectory_id"])
    assert [s["step_index"] for s in steps] == [0, 1]
    assert [s["messages"][-1]["content"] for s in steps] == ["hello session", "next"]
    assert {s["provenance"]["attribution"] for s in steps} == {"key"}
    assert {(s["group_id"], s["channel"], s["metadata"]["task"]) for s in steps} == {("g-oai", "val", "t9")}
    assert [s["continuity"] for s in steps] == ["first", "clean"]


def test_an_unrelated_conversation_with_the_key_joins_the_session_too(open_server: Server) -> None:
    t = open_server.mint()
    client = oai(open_server, t["api_key"])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "task one"}])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fresh start"}])
    client.completions.create(model="m", prompt="plain completion")
    steps = open_server.steps(t["trajectory_id"])
    assert [s["step_index"] for s in steps] == [0, 1, 2]
    assert steps[2]["provenance"]["protocol"] == "openai.completions"


def test_anthropic_sdk_sends_the_key_as_x_api_key(open_server: Server) -> None:
    t = open_server.mint(metadata={"agent": "claude-like"})
    client = anthropic.Anthropic(base_url=open_server.url, api_key=t["api_key"], max_retries=0, timeout=10)
    msgs: list[Any] = [{"role": "user", "content": "hi there"}]
    a = client.messages.create(model="m", max_tokens=64, messages=msgs)
    msgs += [{"role": "assistant", "content": a.content[0].text}, {"role": "user", "content": "again"}]  # type: ignore[union-attr]
    with client.messages.stream(model="m", max_tokens=64, messages=msgs) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "echo: again"  # type: ignore[union-attr]
    steps = open_server.steps(t["trajectory_id"])
    assert [s["messages"][-1]["content"] for s in steps] == ["hi there", "again"]
    assert {s["provenance"]["protocol"] for s in steps} == {"anthropic.messages"}
    assert {s["provenance"]["attribution"] for s in steps} == {"key"}


def test_the_open_server_stays_open(open_server: Server) -> None:
    t = open_server.mint()
    assert open_server.api("GET", "/api/v1/session").json()["keys_required"] is False
    assert open_server.app.state.store.has_keys() is False
    assert open_server.api("GET", "/api/v1/stats").status_code == 200  # keyless callers: everything open
    keys = open_server.api("GET", "/api/v1/keys").json()["items"]
    mine = next(k for k in keys if k["key_id"] == t["key_id"])
    assert mine["scope"] == "agent" and mine["binding"] == {"trajectory_id": t["trajectory_id"]}
    assert "secret" not in mine


def test_without_a_bound_key_attribution_is_automatic(open_server: Server) -> None:
    r = httpx.post(f"{open_server.url}/v1/chat/completions", timeout=10, headers={"authorization": "Bearer EMPTY"},
                   json={"model": "m", "messages": [{"role": "user", "content": "anonymous"}]})
    assert r.status_code == 200
    steps = open_server.api("GET", "/api/v1/steps", params={"limit": 1000}).json()["items"]
    mine = [s for s in steps if s["messages"] and s["messages"][-1]["content"] == "anonymous"]
    assert len(mine) == 1 and mine[0]["provenance"]["attribution"] == "auto-new"


def test_path_and_headers_win_over_the_key(open_server: Server) -> None:
    t = open_server.mint(metadata={"task": "from-key"})
    by_path = oai(open_server, t["api_key"], base=f"{open_server.url}/t/path-wins/v1")
    by_path.chat.completions.create(model="m", messages=[{"role": "user", "content": "p"}])
    client = oai(open_server, t["api_key"])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "h"}],
                                   extra_headers={"X-Steplake-Trajectory": "header-wins"})
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "m"}],
                                   extra_headers={"X-Steplake-Metadata": '{"task": "from-header"}'})
    assert [s["provenance"]["attribution"] for s in open_server.steps("path-wins")] == ["path"]
    assert [s["provenance"]["attribution"] for s in open_server.steps("header-wins")] == ["header"]
    (own,) = open_server.steps(t["trajectory_id"])
    assert own["provenance"]["attribution"] == "key" and own["metadata"] == {"task": "from-header"}


def test_a_key_bound_to_a_new_trajectory_opens_it_with_the_binding(open_server: Server) -> None:
    _, secret = open_server.app.state.store.create_key(  # as `steplake keys create --trajectory ...`
        "agent", "cli", {"trajectory_id": "cli-sess", "group_id": "cli-group", "channel": "eval",
                         "metadata": {"agent": "coder"}})
    two_turns(oai(open_server, secret), "from the cli")
    r = open_server.api("GET", "/api/v1/trajectories/cli-sess", params={"steps": "false"}).json()
    assert (r["group_id"], r["channel"], r["n_steps"], r["metadata"]["agent"]) == ("cli-group", "eval", 2, "coder")


def test_a_completed_session_goes_on_in_a_new_trajectory(open_server: Server) -> None:
    """The idle rule (or a trainer) completed the session's trajectory; the agent comes back with its key:
    the call is captured in a new trajectory of the same group and channel, and the key moves there. A call
    naming the complete trajectory by path is refused capture as before."""
    t = open_server.mint(group_id="sess-g", channel="eval", metadata={"agent": "assistant"})
    tid = t["trajectory_id"]
    client = oai(open_server, t["api_key"])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "before"}])
    assert open_server.api("POST", f"/api/v1/trajectories/{tid}/complete", json={"reward": 1.0}).status_code == 200
    failed = open_server.captures()["failed"]
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "after"}])
    assert out.choices[0].message.content == "echo: after"
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "after"},
                                                        {"role": "assistant", "content": "echo: after"},
                                                        {"role": "user", "content": "again"}])
    assert [s["messages"][-1]["content"] for s in open_server.steps(tid)] == ["before"]
    items = open_server.api("GET", "/api/v1/trajectories", params={"group_id": "sess-g"}).json()["items"]
    [nxt] = [i for i in items if i["trajectory_id"] != tid]
    assert (nxt["channel"], nxt["metadata"]["agent"], nxt["metadata"]["continues"]) == ("eval", "assistant", tid)
    assert [s["messages"][-1]["content"] for s in open_server.steps(nxt["trajectory_id"])] == ["after", "again"]
    [key] = [k for k in open_server.app.state.store.list_keys() if k.key_id == t["key_id"]]
    assert key.binding is not None and key.binding["trajectory_id"] == nxt["trajectory_id"]
    # by path, the complete trajectory still takes nothing; with --capture-sync the call fails (503)
    with pytest.raises(openai.APIStatusError) as err:
        oai(open_server, "EMPTY", base=f"{open_server.url}/t/{tid}/v1") \
            .chat.completions.create(model="m", messages=[{"role": "user", "content": "by path"}])
    assert err.value.status_code == 503 and "is complete" in err.value.message
    captures = open_server.captures()
    assert captures["failed"] == failed + 1 and "is complete" in captures["last_error"]


def test_session_key_on_a_server_that_requires_keys(keyed_server: Server) -> None:
    assert keyed_server.api("GET", "/api/v1/session", key="").json()["keys_required"] is True
    t = keyed_server.mint(channel="train")
    key = t["api_key"]
    two_turns(oai(keyed_server, key), "keyed")
    assert [s["provenance"]["attribution"] for s in keyed_server.steps(t["trajectory_id"])] == ["key", "key"]
    ant = anthropic.Anthropic(base_url=keyed_server.url, api_key=key, max_retries=0, timeout=10)
    ant.messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "x-api-key"}])
    assert len(keyed_server.steps(t["trajectory_id"])) == 3
    # an agent key: the gateway and agent routes, nothing of the trainer's or the admin's
    assert keyed_server.api("POST", "/api/v1/trajectories", key=key, json={}).status_code == 201
    for method, path, body in [("GET", "/api/v1/trajectories", None), ("GET", "/api/v1/stats", None),
                               ("POST", "/api/v1/batches", {"groups": 1, "dry_run": True}),
                               ("GET", "/api/v1/keys", None), ("DELETE", f"/api/v1/keys/{t['key_id']}", None),
                               ("POST", "/api/v1/curation", {"trajectory_ids": ["x"], "quality": "good"})]:
        r = keyed_server.api(method, path, key=key, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert keyed_server.api("POST", "/api/v1/session", key="", json={"key": key}).status_code == 403
    # header attribution still wins over the key where keys are required
    oai(keyed_server, key).chat.completions.create(model="m", messages=[{"role": "user", "content": "h"}],
                                                  extra_headers={"X-Steplake-Trajectory": "keyed-header"})
    assert [s["provenance"]["attribution"] for s in keyed_server.steps("keyed-header")] == ["header"]
    # revoked: refused at once (revoked through the API) with 401
    assert keyed_server.api("DELETE", f"/api/v1/keys/{t['key_id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        oai(keyed_server, key).chat.completions.create(model="m", messages=[{"role": "user", "content": "no"}])
    with pytest.raises(anthropic.AuthenticationError):
        ant.messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "no"}])


def test_bad_session_key_requests_are_422(keyed_server: Server) -> None:
    for body in ({"session_key": "yes"}, {"session_key": 1}, {"session_key": None}):
        r = keyed_server.api("POST", "/api/v1/trajectories", json=body)
        assert r.status_code == 422, (body, r.text)
    r = keyed_server.api("POST", "/api/v1/keys", json={"scope": "admin", "binding": {"trajectory_id": "x"}})
    assert r.status_code == 422  # keys are bound by POST /trajectories (or the CLI), never to another scope
    r = keyed_server.api("POST", "/api/v1/trajectories", json={"session_key": False})
    assert r.status_code == 201 and "api_key" not in r.json()


def test_keys_api_and_client_create_session_keys(keyed_server: Server) -> None:
    import steplake

    admin = steplake.Client(keyed_server.url, api_key=keyed_server.admin)
    made = admin.create_key("agent", "via-api", binding={"trajectory_id": "api-sess", "channel": "eval"})
    assert made["binding"] == {"trajectory_id": "api-sess", "channel": "eval"} and made["secret"]
    two_turns(oai(keyed_server, made["secret"]), "through the keys API")
    r = keyed_server.api("GET", "/api/v1/trajectories/api-sess", params={"steps": "false"}).json()
    assert (r["channel"], r["n_steps"]) == ("eval", 2)
    listed = {k["key_id"]: k for k in admin.list_keys()}
    assert listed[made["key_id"]]["binding"]["trajectory_id"] == "api-sess"
    bad = keyed_server.api("POST", "/api/v1/keys", json={"scope": "trainer", "binding": {"trajectory_id": "x"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "binding_scope"
    bad = keyed_server.api("POST", "/api/v1/keys", json={"scope": "agent", "binding": {"group_id": "g"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_binding"


def test_responses_with_a_session_key_land_in_its_trajectory(open_server: Server) -> None:
    t = open_server.mint()
    client = oai(open_server, t["api_key"])
    r1 = client.responses.create(model="m", input="hello responses")
    r2 = client.responses.create(model="m", input=[{"role": "user", "content": "fresh start"}])
    steps = open_server.steps(t["trajectory_id"])
    assert [s["step_id"] for s in steps] == [r1.id[5:], r2.id[5:]]
    assert {s["provenance"]["attribution"] for s in steps} == {"key"}
    assert {s["provenance"]["protocol"] for s in steps} == {"openai.responses"}
