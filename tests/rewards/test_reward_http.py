"""The HTTP reward model against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from steplake.rewards.http_rm import HttpRewardModel, build_payload, read_field
from tests.rewards.reward_testkit import make_ctx, make_step, serve, slow

seen: list[dict[str, Any]] = []


def fake_rm(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    seen.append({"path": path, **body})
    if path == "/score":
        last = body["messages"][-1]["content"]
        return 200, {"score": 0.9 if "42" in last else 0.1, "model": "fake-rm"}
    if path == "/nested":
        return 200, {"result": {"scores": [0.25, 0.75]}}
    if path == "/whole":
        return 200, {"score": float(len(body["steps"]))}
    if path == "/error":
        return 500, {"detail": "overloaded"}
    if path == "/notjson":
        return 200, "<html>"
    if path == "/string":
        return 200, {"score": "high"}
    if path == "/slow":
        slow(1.0)
        return 200, {"score": 1}
    return 404, {}


@pytest.fixture(scope="module")
def rm_url() -> Iterator[str]:
    with serve(fake_rm) as url:
        yield url


async def test_scores_the_final_exchange(rm_url: str) -> None:
    rm = HttpRewardModel()
    ctx = make_ctx("It is 42.", 42, params={"url": f"{rm_url}/score", "api_key": "sek"})
    result = await rm.score(ctx)
    assert result.value == 0.9 and result.details == {"response": {"model": "fake-rm"}}
    body = seen[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": "It is 42."}
    assert body["messages"][0]["role"] == "user" and body["ground_truth"] == 42
    assert body["_headers"]["Authorization"] == "Bearer sek"


async def test_dotted_field_and_trajectory_payload(rm_url: str) -> None:
    rm = HttpRewardModel()
    nested = await rm.score(
        make_ctx("x", params={"url": f"{rm_url}/nested", "score_field": "result.scores.1"})
    )
    assert nested.value == 0.75
    steps = [make_step(0, "a"), make_step(1, "b")]
    whole = await rm.score(
        make_ctx(None, steps=steps, params={"url": f"{rm_url}/whole", "payload": "trajectory"})
    )
    assert whole.value == 2.0
    assert "prompt_ids" not in seen[-1]["steps"][0]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/error", "HTTP 500"),
        ("/notjson", "not JSON"),
        ("/string", "not a finite number"),
        ("/nested", "no field 'score'"),
        ("/slow", "unreachable: ReadTimeout"),
    ],
)
async def test_failures_are_recorded_not_raised(rm_url: str, path: str, fragment: str) -> None:
    result = await HttpRewardModel().score(make_ctx("x", params={"url": f"{rm_url}{path}", "timeout_s": 0.2}))
    assert result.value is None and fragment in (result.error or "")


async def test_connection_refused_is_a_failure() -> None:
    with serve(fake_rm) as url:
        pass  # server closed: its port refuses connections now
    result = await HttpRewardModel().score(make_ctx("x", params={"url": f"{url}/score", "timeout_s": 1}))
    assert result.value is None and "unreachable" in (result.error or "")


def test_payload_and_read_field() -> None:
    payload = build_payload(make_ctx("hi", params={"url": "http://x", "extra_body": {"rubric": "r"}}))
    assert payload["rubric"] == "r" and payload["trajectory_id"] == "t1"
    assert read_field({"a": [{"b": 3}]}, "a.0.b") == 3
    with pytest.raises(KeyError):
        read_field({"a": 1}, "b")
