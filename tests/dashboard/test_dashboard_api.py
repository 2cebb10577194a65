"""The dashboard's routes in-process (ASGI transport, real SqliteStore file): page, static files, helpers."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from steplake.app import create_app
from steplake.config import Settings
from steplake.dashboard.routes import CSP, STATIC
from steplake.store import overview as queries
from steplake.store.overview import first_seq_since, reward_histogram
from steplake.store.sqlite import SqliteStore
from steplake.store.sqlite_overview import SqliteOverviewSource

from .producer import math_steps


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=["http://127.0.0.1:9"])
    app = create_app(settings, SqliteStore(settings.db), gateway=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def seed(c: httpx.AsyncClient, group: str, rewards: list[float], agent: str = "a", fork: bool = False) -> list[str]:
    tids = [f"{group}-t{i}" for i in range(len(rewards))]
    for tid, r in zip(tids, rewards, strict=True):
        body = {"trajectory_id": tid, "group_id": group, "group_size": len(rewards), "metadata": {"agent": agent}}
        assert (await c.post("/api/v1/trajectories", json=body)).status_code == 201
        assert (await c.post("/api/v1/steps", json={"steps": math_steps(tid, fork=fork)})).status_code == 200
        assert (await c.post(f"/api/v1/trajectories/{tid}/complete", json={"reward": r})).status_code == 200
    return tids


async def test_page_has_a_strict_csp_and_no_inline_code(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe" not in CSP
    assert r.headers["x-frame-options"] == "DENY"
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    assert " style=" not in r.text and "<style" not in r.text
    js = await client.get("/static/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    css = await client.get("/static/css/app.css")
    assert css.headers["content-type"].startswith("text/css")


def test_static_code_never_builds_html_from_strings() -> None:
    for path in STATIC.rglob("*.js"):
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                       "setAttribute(\"style\""):
            assert banned not in text, f"{path.name} uses {banned}"


@pytest.mark.parametrize("path", ["/static/../routes.py", "/static/..%2f__init__.py", "/static/js/nope.js",
                                  "/static/", "/static/%2e%2e/%2e%2e/pyproject.toml"])
async def test_static_files_stay_inside_their_folder(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert "error" in r.json()


async def test_overview_aggregates(client: httpx.AsyncClient) -> None:
    await seed(client, "g1", [1.0, 0.0, 0.5], fork=True)
    await client.post("/api/v1/trajectories", json={"trajectory_id": "open-1"})
    r = await client.get("/api/v1/dashboard/overview", params={"window": 600, "bucket": 60})
    assert r.status_code == 200
    o = r.json()
    assert o["stats"]["steps"] == 9
    assert sum(p["steps"] for p in o["series"]["points"]) == 9
    assert sum(p["forks"] for p in o["series"]["points"]) == 3
    assert 10 <= len(o["series"]["points"]) <= 12
    assert o["rewards"]["n"] == 3 and o["rewards"]["mean"] == pytest.approx(0.5)
    assert sum(b["count"] for b in o["rewards"]["bins"]) == 3
    stages = {s["name"]: s["count"] for s in o["funnel"]["stages"]}
    assert stages["collected"] == 4 and stages["complete"] == 3 and stages["rewarded"] == 3
    assert stages["ready"] == 3 and stages["consumed"] == 0
    assert o["policy"]["versions"] == [{"version": 0, "trajectories": 3, "staleness": 0, "reward": {
        "n": 3, "mean": pytest.approx(0.5), "std": pytest.approx((1 / 6) ** 0.5), "se": pytest.approx((1 / 12) ** 0.5)}}]
    assert o["channels"] == ["train"]
    bad = await client.get("/api/v1/dashboard/overview", params={"window": 86400, "bucket": 1})
    assert bad.status_code == 422


def test_window_start_is_found_by_binary_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "pool.db")
    store.open()
    try:
        from steplake.records import Step

        steps = [Step(trajectory_id=f"t{i % 7}", step_index=i // 7, prompt_ids=[1, 2], response_ids=[3])
                 for i in range(200)]
        store.append_steps(steps)
        with sqlite3.connect(tmp_path / "pool.db") as raw:  # spread created_at: 1000 + 10 * seq
            raw.execute("UPDATE steps SET created_at = 1000 + 10 * seq")
        conn = store._reader()
        seqs = [s for (s,) in conn.execute("SELECT seq FROM steps ORDER BY seq")]
        for since in (0, 1000 + 10 * seqs[0], 1000 + 10 * seqs[57] - 5, 1000 + 10 * seqs[-1]):
            first = first_seq_since(SqliteOverviewSource(conn), since)
            expected = min(s for s in seqs if 1000 + 10 * s >= since)
            assert first is not None and min(s for s in seqs if s >= first) == expected
        assert first_seq_since(SqliteOverviewSource(conn), 1e12) is None
        o = store.read_overview(0, window=600, bucket=60, now=1000 + 10 * seqs[-1])
        assert sum(p["steps"] for p in o["series"]["points"]) == 61
        assert sum(p["steps"] for p in store.read_overview(0, 600, 60, now=time.time())["series"]["points"]) == 0
        monkeypatch.setattr(queries, "EXACT_ROWS", 10)  # older buckets are counted from the sequence
        points = store.read_overview(0, window=600, bucket=30, now=1000 + 10 * seqs[-1])["series"]["points"]
        assert sum(p["steps"] for p in points) == 61
        assert any(p["estimated"] for p in points) and not points[-1]["estimated"]
        assert [p["steps"] for p in points if p["steps"]] == [3] * 20 + [1]  # 10 s apart, 30 s buckets
    finally:
        store.close()


def test_reward_histogram_edges() -> None:
    assert reward_histogram([])["n"] == 0
    same = reward_histogram([0.5, 0.5])
    assert same["bins"] == [{"lo": 0.5, "hi": 0.5, "count": 2}]
    h = reward_histogram([0.0, 1.0, float("nan"), 0.99], bins=4)
    assert h["n"] == 3 and [b["count"] for b in h["bins"]] == [1, 0, 0, 2]


async def test_tokens_fall_back_to_ids_without_a_tokenizer(client: httpx.AsyncClient) -> None:
    await seed(client, "g2", [1.0])
    r = await client.get("/api/v1/dashboard/tokens", params={"step_id": "g2-t0-s1"})
    assert r.status_code == 200
    body = r.json()
    assert body["tokenizer"] is None
    step = (await client.get("/api/v1/steps/g2-t0-s1")).json()
    assert body["prompt"] == [f"<{i}>" for i in step["prompt_ids"]]
    assert body["response"] == [f"<{i}>" for i in step["response_ids"]]
    assert (await client.get("/api/v1/dashboard/tokens", params={"step_id": "nope"})).status_code == 404


async def test_tokens_with_a_missing_tokenizer_report_the_error(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "pool.db"), tokenizer=str(tmp_path / "missing.gguf"),
                        upstream=["http://127.0.0.1:9"])
    app = create_app(settings, SqliteStore(settings.db), gateway=False)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await seed(c, "g3", [1.0])
        body = (await c.get("/api/v1/dashboard/tokens", params={"step_id": "g3-t0-s0"})).json()
    assert body["tokenizer"] is None and "missing.gguf" in body["tokenizer_error"]
    assert body["prompt"][0] == "<1>"


async def test_curate_everything_matching_a_filter(client: httpx.AsyncClient) -> None:
    a = await seed(client, "ga", [1.0, 0.0], agent="alice")
    b = await seed(client, "gb", [1.0], agent="bob")
    r = await client.post("/api/v1/dashboard/curate", json={"filters": {"agent": "alice", "min_reward": "0.5"},
                                                            "trainable": False, "tags_add": ["bulk"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 1, "updated": 1}
    cur = {t: (await client.get(f"/api/v1/trajectories/{t}", params={"steps": False})).json()["curation"]
           for t in a + b}
    assert cur[a[0]]["trainable"] is False and cur[a[0]]["tags"] == ["bulk"]
    assert cur[a[1]]["trainable"] is True and cur[b[0]]["trainable"] is True
    r = await client.post("/api/v1/dashboard/curate", json={"filters": {"q": "double it"}, "quality": "bad"})
    assert r.json() == {"matched": 0, "updated": 0}
    for body in ({"filters": {"nope": 1}, "quality": "x"}, {"filters": {"min_reward": "abc"}, "quality": "x"},
                 {"filters": {}}, {"filters": {}, "quality": ""}):
        bad = await client.post("/api/v1/dashboard/curate", json=body)
        assert bad.status_code == 422, (body, bad.text)


async def test_overview_counts_curation_exactly(client: httpx.AsyncClient) -> None:
    """The overview's funnel is counted by the store, never sampled (the same on PostgreSQL:
    tests/store/test_contract.py)."""
    await seed(client, "gp", [1.0, 0.0], fork=True)
    await client.post("/api/v1/curation", json={"trajectory_ids": ["gp-t1"], "trainable": False})
    o = (await client.get("/api/v1/dashboard/overview", params={"window": 600, "bucket": 60})).json()
    assert o["sampled"] is False
    stages = {s["name"]: s["count"] for s in o["funnel"]["stages"]}
    assert stages["collected"] == 2 and stages["rewarded"] == 2 and stages["curated"] == 1
    assert o["funnel"]["untrainable"] == 1
    assert sum(p["forks"] for p in o["series"]["points"]) == 2
