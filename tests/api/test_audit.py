"""The audit log (issue 12.21), on every Store, through a real server on 127.0.0.1: each admin action leaves
one entry with the right actor (key id, dashboard session's key id, ``anonymous`` on a keyless server) and
client address; refused actions leave none; only admin keys read it (``GET /api/v1/audit``, the clients);
the CLI records its key changes and prunes as ``cli``; the server's retention pruner as ``server``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from steplake.app import create_app
from steplake.cli import cli
from steplake.client import AsyncClient, Client
from steplake.config import Settings
from steplake.errors import PermissionDeniedError
from steplake.pool.pool import Pool
from steplake.records import Step
from steplake.store.audit import cli_origin
from steplake.store.sqlite import SqliteStore
from tests.conftest import BACKENDS, free_port, make_store
from tests.procs import serve_app

REWARDS = {"channels": {"train": {"functions": [{"name": "final_answer", "version": "1"}]}}}
ALL_BACKENDS = [pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]


@contextmanager
def serving(store: Any, tmp_path: Path) -> Iterator[str]:
    """uvicorn serving create_app(store) from a thread on a free 127.0.0.1 port (real sockets)."""
    port = free_port()
    settings = Settings(db=str(tmp_path / "pool.db"), port=port, rewards=REWARDS)
    app = create_app(settings, store, gateway=False)
    with serve_app(app, port, ready_path=None, timeout=20) as url:
        yield url


def seed(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as http:
        for tid in ("t1", "t2", "t3"):
            step = {"step_id": f"{tid}-0", "trajectory_id": tid, "step_index": 0, "prompt_ids": [1, 2],
                    "response_ids": [3], "response": {"content": "Answer: 42"}, "finish_reason": "stop",
                    "metadata": {"ground_truth": "42"}}
            assert http.post("/api/v1/steps", json={"steps": [step]}).status_code == 200
            assert http.post(f"/api/v1/trajectories/{tid}/complete", json={"reward": 1.0}).status_code == 200


def by_action(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["action"]: e for e in reversed(items)}  # the newest entry of each action


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_each_admin_action_is_recorded_with_actor_and_address(backend: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # PostgreSQL exports are written under the working directory
    store = make_store(backend, tmp_path)
    with serving(store, tmp_path) as url:
        # keyless (loopback) server: the first admin key is minted anonymously
        first = httpx.post(f"{url}/api/v1/keys", json={"scope": "admin", "name": "root"})
        assert first.status_code == 201, first.text
        admin_id, admin = first.json()["key_id"], first.json()["secret"]
        ah = {"authorization": f"Bearer {admin}"}
        r = httpx.post(f"{url}/api/v1/keys", json={"scope": "trainer", "name": "tr"}, headers=ah)
        trainer_id, trainer = r.json()["key_id"], r.json()["secret"]
        th = {"authorization": f"Bearer {trainer}"}
        seed(url, admin)
        assert httpx.delete(f"{url}/api/v1/trajectories/t1", headers=ah).status_code == 200
        with httpx.Client(base_url=url) as dashboard:  # the dashboard: sign in, then the session cookie
            assert dashboard.post("/api/v1/session", json={"key": admin}).status_code == 200
            r = dashboard.post("/api/v1/curation", json={"trajectory_ids": ["t2", "t3"], "quality": "bad",
                                                         "tags_add": ["spam"], "reviewer": "ann"})
            assert r.status_code == 200 and r.json()["updated"] == 2, r.text
        assert httpx.post(f"{url}/api/v1/policy", json={"version": 5, "note": "n"}, headers=th).status_code == 200
        r = httpx.post(f"{url}/api/v1/rewards/run", json={"trajectory_ids": ["t2"], "version": "9"}, headers=th)
        assert r.status_code == 200, r.text
        r = httpx.post(f"{url}/api/v1/exports", json={"format": "jsonl", "name": "e1"}, headers=th)
        assert r.status_code == 201, r.text
        # refused or failed: nothing recorded
        assert httpx.delete(f"{url}/api/v1/trajectories/t2", headers=th).status_code == 403
        assert httpx.delete(f"{url}/api/v1/keys/nope", headers=ah).status_code == 404
        assert httpx.post(f"{url}/api/v1/policy", json={"version": 5}, headers=th).status_code == 409
        # only admins read the log
        r = httpx.get(f"{url}/api/v1/audit", headers=th)
        assert r.status_code == 403 and r.json()["error"]["type"]
        assert httpx.get(f"{url}/api/v1/audit").status_code == 401
        with pytest.raises(PermissionDeniedError):
            Client(url, api_key=trainer).audit()
        assert httpx.delete(f"{url}/api/v1/keys/{trainer_id}", headers=ah).status_code == 200

        log = Client(url, api_key=admin).audit(limit=1000)
        items = log["items"]
        assert log["next_cursor"] is None and [e["id"] for e in items] == sorted((e["id"] for e in items),
                                                                                 reverse=True)
        assert [e["action"] for e in reversed(items)] == [
            "key.create", "key.create", "trajectory.delete", "session.create", "curation.update",
            "policy.publish", "rewards.run", "export.create", "key.revoke"]
        assert all(e["client"] == "127.0.0.1" for e in items)
        assert admin not in str(items) and trainer not in str(items)  # never a secret
        first_key, second_key = [e for e in reversed(items) if e["action"] == "key.create"]
        assert (first_key["actor"], first_key["via"], first_key["target"]) == ("anonymous", "open", admin_id)
        assert first_key["summary"] == {"scope": "admin", "name": "root"}
        assert (second_key["actor"], second_key["via"], second_key["target"]) == (admin_id, "key", trainer_id)
        e = by_action(items)
        assert (e["trajectory.delete"]["actor"], e["trajectory.delete"]["target"]) == (admin_id, "t1")
        assert (e["session.create"]["actor"], e["session.create"]["via"]) == (admin_id, "session")
        cur = e["curation.update"]
        assert (cur["actor"], cur["via"], cur["target"]) == (admin_id, "session", "2 trajectories")
        assert cur["summary"] == {"quality": "bad", "tags_add": ["spam"], "reviewer": "ann", "updated": 2,
                                  "trajectory_ids": ["t2", "t3"], "n_trajectory_ids": 2}
        assert (e["policy.publish"]["actor"], e["policy.publish"]["target"]) == (trainer_id, "5")
        assert e["rewards.run"]["actor"] == trainer_id
        assert e["rewards.run"]["summary"]["version"] == "9" and e["rewards.run"]["summary"]["scored"] >= 1
        assert (e["export.create"]["target"], e["export.create"]["summary"]["steps"]) == ("e1", 2)
        assert (e["key.revoke"]["actor"], e["key.revoke"]["target"]) == (admin_id, trainer_id)

        # filters, pages, the async client
        c = Client(url, api_key=admin)
        assert [x["target"] for x in c.audit(action="key.create")["items"]] == [trainer_id, admin_id]
        assert {x["action"] for x in c.audit(actor=trainer_id)["items"]} == {"policy.publish", "rewards.run",
                                                                              "export.create"}
        assert c.audit(since=time.time() + 60)["items"] == []
        page = c.audit(limit=4)
        rest = c.audit(limit=100, cursor=page["next_cursor"])
        assert [x["id"] for x in page["items"] + rest["items"]] == [x["id"] for x in items]
        got = asyncio.run(AsyncClient(url, api_key=admin).audit(action="key.revoke"))
        assert [x["target"] for x in got["items"]] == [trainer_id]
        for bad in ({"cursor": "x"}, {"cursor": str(2**63)}, {"limit": "0"}, {"since": "soon"},
                    {"actor": "\x00"}, {"action": "a\x00"}):
            assert httpx.get(f"{url}/api/v1/audit", params=bad, headers=ah).status_code == 422, bad


def run_cli(*args: str) -> Any:
    env: dict[str, str | None] = {f"STEPLAKE_{n.upper()}": None for n in Settings.model_fields}
    return CliRunner().invoke(cli, list(args), env=env)


def test_cli_key_changes_and_prunes_are_recorded_and_listed(tmp_path: Path) -> None:
    db = str(tmp_path / "pool.db")
    made = run_cli("keys", "create", "--scope", "admin", "--name", "ops", "--db", db)
    assert made.exit_code == 0, made.output
    key_id = made.output.split("key_id: ")[1].split()[0]
    assert run_cli("keys", "revoke", key_id, "--db", db).exit_code == 0
    store = SqliteStore(db)
    store.open()
    store.append_steps([Step(step_id="old-0", trajectory_id="old", step_index=0, prompt_ids=[1], response_ids=[2])])
    store.complete_trajectory("old", 1.0)
    store.close()
    time.sleep(0.05)
    assert run_cli("prune", "--db", db, "--retention", "train=0.00000001d", "--dry-run").exit_code == 0
    r = run_cli("prune", "--db", db, "--retention", "train=0.00000001d")
    assert r.exit_code == 0 and "train: 1 trajectory deleted" in r.output, r.output

    store.open()
    items = store.list_audit({}, None, 100).items
    store.close()
    assert [(e["action"], e["actor"], e["via"], e["client"]) for e in items] == [
        ("trajectories.prune", "cli", "cli", cli_origin()), ("key.revoke", "cli", "cli", cli_origin()),
        ("key.create", "cli", "cli", cli_origin())]  # the dry run deleted nothing: no entry
    assert items[0]["summary"]["deleted"] == {"train": 1} and items[2]["summary"]["scope"] == "admin"
    shown = run_cli("audit", "--db", db)
    assert shown.exit_code == 0 and shown.output.count("\n") == 3, shown.output
    assert "key.create" in shown.output and key_id in shown.output and cli_origin() in shown.output
    only = run_cli("audit", "--db", db, "--action", "key.revoke", "--since", "1h", "--json")
    assert only.exit_code == 0 and only.output.count("\n") == 1 and '"target": "' + key_id in only.output
    assert run_cli("audit", "--db", db, "--since", "tomorrow").exit_code == 2


def test_cli_reads_a_servers_log_with_an_admin_key(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    with serving(store, tmp_path) as url:
        admin = httpx.post(f"{url}/api/v1/keys", json={"scope": "admin"}).json()
        r = run_cli("audit", "--url", url, "--api-key", admin["secret"])
        assert r.exit_code == 0 and "key.create" in r.output and "anonymous (open)" in r.output, r.output
        trainer = httpx.post(f"{url}/api/v1/keys", json={"scope": "trainer"},
                             headers={"authorization": f"Bearer {admin['secret']}"}).json()
        r = run_cli("audit", "--url", url, "--api-key", trainer["secret"])
        assert r.exit_code == 2 and "admin" in r.output


@pytest.mark.parametrize("backend", ALL_BACKENDS)
async def test_the_servers_retention_pruner_is_recorded(backend: str, tmp_path: Path) -> None:
    store = make_store(backend, tmp_path)
    store.open()
    store.append_steps([Step(step_id="p-0", trajectory_id="p", step_index=0, prompt_ids=[1], response_ids=[2])])
    store.complete_trajectory("p", 0.0)
    await asyncio.sleep(0.05)
    pool = Pool(store, retention={"train": 1e-8})
    await pool.start()
    try:
        for _ in range(200):
            items = store.list_audit({"action": "trajectories.prune"}, None, 10).items
            if items:
                break
            await asyncio.sleep(0.02)
        assert len(items) == 1 and (items[0]["actor"], items[0]["via"], items[0]["client"]) == ("server", "server",
                                                                                                 None)
        assert items[0]["summary"]["deleted"] == {"train": 1}
        assert store.get_trajectory("p") is None
    finally:
        await pool.stop()
