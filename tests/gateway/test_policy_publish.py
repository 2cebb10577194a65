"""``POST /api/v1/policy`` (CONTRACT §2): with ``weights_path`` the gateway pauses new upstream calls, lets
the calls in flight finish, reloads every reloadable upstream and records the version only if all succeeded
(else 502 ``policy_reload_failed``, nothing recorded, the old weights serve again); a step carries the
version current when its upstream call started; ``weights_path`` must lie under ``--weights-root``; the
client raises on any error. A real server (uvicorn thread, the full app) in front of fake SGLang-style
upstreams whose reload fails on demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from steplake import errors as E
from steplake.app import create_app
from steplake.client import AsyncClient, Client
from steplake.config import Settings
from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.procs import serve_app


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstreamThread]]:
    made = [FakeUpstreamThread(free_port()).start() for _ in range(2)]
    yield made
    for f in made:
        f.stop()


@contextmanager
def serve(tmp_path: Path, upstreams: list[str], **settings: Any) -> Iterator[str]:
    port = free_port()
    s = Settings(port=port, db=str(tmp_path / "pool.db"), upstream=upstreams, **settings)
    with serve_app(create_app(s), port) as url:
        yield url


def chat(url: str, text: str, tid: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers={"X-Steplake-Trajectory": tid},
                      json={"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]})


def version_of(url: str, tid: str) -> int:
    deadline = time.monotonic() + 5
    while True:
        steps = httpx.get(f"{url}/api/v1/trajectories/{tid}", timeout=10).json().get("steps") or []
        if steps:
            return int(steps[-1]["policy_version"])
        assert time.monotonic() < deadline, f"no step captured in {tid}"
        time.sleep(0.02)


def test_a_failed_reload_records_nothing_and_rolls_the_others_back(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a, b = fakes
    root = tmp_path / "ckpt"
    with serve(tmp_path, [f"sglang+{a.url}", f"sglang+{b.url}"], weights_root=str(root)) as url, \
            Client(url) as c:
        p1, p2 = str(root.resolve() / "step-1"), str(root.resolve() / "step-2")
        assert c.publish_policy(1, weights_path=str(root / "step-1"))["weights_path"] == p1
        assert a.fake.reloaded == b.fake.reloaded == [p1]
        b.fake.reload_fails = "CUDA out of memory"
        with pytest.raises(E.PolicyReloadError) as err:
            c.publish_policy(2, weights_path=p2)
        assert err.value.status == 502 and err.value.code == "policy_reload_failed"
        by_url = {u["url"]: u for u in err.value.details["upstreams"]}
        assert by_url[a.url]["reloaded"] is True and by_url[a.url]["rolled_back"] is True
        assert by_url[b.url]["reloaded"] is False and "CUDA out of memory" in by_url[b.url]["detail"]
        assert a.fake.reloaded == [p1, p2, p1] and b.fake.reloaded == [p1]  # a serves step-1 again
        assert c.get_policy()["version"] == 1
        assert chat(url, "after the failure", "t-fail").status_code == 200
        assert version_of(url, "t-fail") == 1
        b.fake.reload_fails = None
        assert c.publish_policy(2, weights_path=p2)["version"] == 2
        assert chat(url, "on step-2", "t-ok").status_code == 200
        assert version_of(url, "t-ok") == 2


def test_an_upstream_that_cannot_go_back_gets_no_calls(tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    """First publish, one reload fails: the other upstream has no earlier weights to go back to, so it is
    left out of routing until a publish reloads it."""
    a, b = fakes
    root = tmp_path / "ckpt"
    with serve(tmp_path, [f"sglang+{a.url}", f"sglang+{b.url}"], weights_root=str(root)) as url:
        b.fake.reload_fails = "bad checkpoint"
        r = httpx.post(f"{url}/api/v1/policy", json={"version": 1, "weights_path": "step-1"}, timeout=30)
        assert r.status_code == 502 and r.json()["error"]["code"] == "policy_reload_failed"
        stale = {u["url"]: u["stale_weights"] for u in httpx.get(f"{url}/api/v1/stats").json()["gateway"]["upstreams"]}
        assert stale[a.url] and stale[b.url] is None
        a.fake.requests.clear()
        for i in range(6):
            assert chat(url, f"q{i}", f"t{i}").status_code == 200
        assert a.fake.requests == [] and len(b.fake.requests) >= 6
        b.fake.reload_fails = None
        assert httpx.post(f"{url}/api/v1/policy", json={"version": 1, "weights_path": "step-1"}).status_code == 200
        assert all(u["stale_weights"] is None for u in httpx.get(f"{url}/api/v1/stats").json()["gateway"]["upstreams"])


def test_versions_must_increase_and_paths_stay_under_the_weights_root(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a = fakes[0]
    root = tmp_path / "ckpt"
    (root / "sub").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    (root / "inner").symlink_to(root / "sub")
    with serve(tmp_path, [f"sglang+{a.url}"], weights_root=str(root)) as url, Client(url) as c:
        for bad in ("/etc/shadow", "../outside", "sub/../../outside", "escape/shadow", str(tmp_path)):
            with pytest.raises(E.ValidationError) as err:
                c.publish_policy(1, weights_path=bad)
            assert err.value.status == 422 and err.value.code == "weights_path_refused", bad
        with pytest.raises(E.ValidationError):
            c.publish_policy(1, weights_path="sub/a\x00b")
        assert a.fake.reload_calls == [] and c.get_policy()["version"] == 0
        assert c.publish_policy(1, weights_path="inner/ckpt")["weights_path"] == str(root.resolve() / "sub" / "ckpt")
        assert c.publish_policy(2)["version"] == 2  # no weights_path: record only
        with pytest.raises(E.ConflictError):
            c.publish_policy(2, weights_path=str(root / "sub"))
        assert a.fake.reload_calls == [str(root.resolve() / "sub" / "ckpt")]  # the 409 reloaded nothing
    with serve(tmp_path / "other", [f"sglang+{a.url}"]) as url, Client(url) as c:  # no --weights-root
        with pytest.raises(E.ValidationError, match="--weights-root"):
            c.publish_policy(1, weights_path=str(root / "sub"))
        assert c.publish_policy(1)["version"] == 1


def test_a_call_in_flight_keeps_the_version_it_started_with(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a = fakes[0]
    root = tmp_path / "ckpt"
    with serve(tmp_path, [f"sglang+{a.url}"], weights_root=str(root)) as url:
        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as h:
                def call(text: str, tid: str) -> Any:
                    return asyncio.create_task(h.post("/v1/chat/completions", headers={"X-Steplake-Trajectory": tid},
                                                      json={"model": "m", "messages": [{"role": "user", "content": text}]}))
                # record only: the publish does not wait, the slow call keeps version 0
                slow = call("[[slow]] before v1", "t-slow-0")
                await asyncio.sleep(0.5)
                assert (await h.post("/api/v1/policy", json={"version": 1})).status_code == 200
                assert not slow.done()
                assert (await slow).status_code == 200
                # with weights: the publish waits for the call in flight; a call arriving meanwhile waits too
                slow = call("[[slow]] before v2", "t-slow-1")
                await asyncio.sleep(0.5)
                publish = asyncio.create_task(h.post("/api/v1/policy", json={"version": 2, "weights_path": "w2"}))
                await asyncio.sleep(0.3)
                waiting = call("during the reload", "t-during")
                await asyncio.sleep(0.5)
                assert not waiting.done() and not publish.done()
                assert (await publish).status_code == 200 and slow.done()
                assert (await slow).status_code == 200 and (await waiting).status_code == 200
        asyncio.run(scenario())
        assert version_of(url, "t-slow-0") == 0
        assert version_of(url, "t-slow-1") == 1
        assert version_of(url, "t-during") == 2


async def test_the_async_client_raises_too(tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a = fakes[0]
    a.fake.reload_fails = "no such file"
    root = tmp_path / "ckpt"
    with serve(tmp_path, [f"steplake+{a.url}"], weights_root=str(root)) as url:
        async with AsyncClient(url) as c:
            with pytest.raises(E.PolicyReloadError, match="no such file"):
                await c.publish_policy(1, weights_path="w1")
            assert (await c.get_policy())["version"] == 0


def test_the_client_raises_on_a_200_that_hides_a_failed_reload() -> None:
    """A server from before the rule recorded the version and answered 200 with the failure inside."""
    answer = {"version": 3, "weights_path": "/w/3", "gateway": {"version": 3, "upstreams": [
        {"url": "http://u", "kind": "sglang", "reloaded": False, "detail": "boom"}]}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)
    with Client("http://x", transport=httpx.MockTransport(handler)) as c, \
            pytest.raises(E.PolicyReloadError, match="boom"):
        c.publish_policy(3, weights_path="/w/3")


@pytest.mark.slow
def test_the_embedded_model_reloads_through_a_publish(tmp_path: Path, model_server: str) -> None:
    """The real reloadable upstream: a checkpoint that does not load is a 502 with nothing recorded and the
    model still answering; the model's own GGUF, under the weights root, loads and is recorded."""
    from steplake.model.engine import find_default_gguf

    gguf = find_default_gguf()
    with serve(tmp_path, [f"steplake+{model_server}"], weights_root=str(gguf.parent)) as url, Client(url) as c:
        with pytest.raises(E.PolicyReloadError, match="does not exist"):
            c.publish_policy(1, weights_path="missing.gguf")
        assert c.get_policy()["version"] == 0
        assert chat(url, "still there?", "t-old").status_code == 200 and version_of(url, "t-old") == 0
        answer = c.publish_policy(1, weights_path=gguf.name)
        assert answer["weights_path"] == str(gguf.resolve()) and answer["gateway"]["upstreams"][0]["reloaded"]
        assert chat(url, "reloaded", "t-new").status_code == 200 and version_of(url, "t-new") == 1
