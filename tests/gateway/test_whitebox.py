"""White-box generate and policy publication through the gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.gateway.conftest import Harness
from tests.gateway.fake_upstream import FakeUpstreamThread


async def test_generate_token_in_token_out(harness: Harness, fake_up: FakeUpstreamThread) -> None:
    r = await harness.client.post("/api/v1/generate", json={"prompt_ids": [3, 4, 5], "sampling": {"max_tokens": 8}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["response_ids"] == [*b"done0", 1] and len(out["response_logprobs"]) == 6
    assert out["finish_reason"] == "stop" and "step_id" not in out
    assert fake_up.fake.requests[-1]["prompt"] == [3, 4, 5]
    assert await harness.steps() == []
    r = await harness.client.post("/api/v1/generate", json={
        "prompt_ids": [3, 4, 5], "trajectory_id": "wb-1", "metadata": {"task": "x"}, "sampling": {"max_tokens": 8}})
    out = r.json()
    step = await harness.pool.get_step(out["step_id"])  # committed before the answer
    assert step["trajectory_id"] == "wb-1" and step["prompt_ids"] == [3, 4, 5]
    assert step["response_ids"] == out["response_ids"] and step["token_source"] == "upstream"
    assert step["provenance"]["protocol"] == "whitebox.generate"


async def test_policy_reload_and_version_on_new_steps(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread, tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    h = await make_harness([f"sglang+{fake_up.url}", f"llamacpp+{fake_up.url}/v1"], weights_root=str(root))
    res = (await h.gw.publish_policy(3, str(root / "weights-v3"), None))["gateway"]
    assert (await h.pool.get_policy())["weights_path"] == str(root.resolve() / "weights-v3")
    by_kind = {u["kind"]: u for u in res["upstreams"]}
    assert by_kind["sglang"]["reloaded"] is True and fake_up.fake.reloaded == [str(root.resolve() / "weights-v3")]
    assert by_kind["llamacpp"]["reloaded"] is False and "cannot be reloaded" in by_kind["llamacpp"]["detail"]
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "v"}]})
    assert r.status_code == 200
    [step] = await h.steps()
    assert step["policy_version"] == 3


async def test_capture_sync_commits_before_answering(
        make_harness: Callable[..., Awaitable[Harness]], fake_up: FakeUpstreamThread) -> None:
    h = await make_harness([fake_up.url], capture_sync=True)
    r = await h.client.post("/v1/chat/completions", json={"model": "m", "stream": True,
                                                          "messages": [{"role": "user", "content": "s"}]})
    assert r.status_code == 200
    assert h.pool.captures.committed == 1  # no settling needed
    assert h.gw.stats()["capture"]["steps"] == 1


async def test_fast_path_middleware_serves_gateway_paths_and_passes_others(harness: Harness) -> None:
    import httpx
    from fastapi import FastAPI

    from steplake.gateway import GatewayFastPath

    app = FastAPI()

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"ok": "app"}

    app.add_middleware(GatewayFastPath, gateway=harness.gw)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    r = await client.post("/t/fast-1/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "fast"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: fast"
    assert (await client.get("/other")).json() == {"ok": "app"}
    assert (await client.get("/v1/chat/completions")).status_code in (404, 405)  # not the gateway's method
    r = await client.post("/v1/messages", content=b"{")
    assert r.status_code == 400 and r.json()["type"] == "error"
    await client.aclose()
    [step] = await harness.steps()
    assert step["trajectory_id"] == "fast-1"
