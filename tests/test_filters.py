"""One trajectory filter (``records.TrajectoryFilter``, parsed by ``steplake.filters``): the list route, the
curation filter, the dashboard's curate-all, exports and reward runs accept the same names and values and
select the same trajectories, on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steplake.app import create_app
from steplake.config import Settings
from steplake.errors import FilterError
from steplake.exports import normalize_filters
from steplake.filters import LOCAL_FILTERS, ExportFilter, TrajectoryFilter, parse_filter
from steplake.records import BatchFilters
from tests.api.helpers import step
from tests.api.servers import asgi_client
from tests.conftest import BACKENDS, make_store

ALL_BACKENDS = [pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]


@pytest.fixture(params=ALL_BACKENDS)
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(db=str(tmp_path / "pool.db")), make_store(request.param, tmp_path), gateway=False)
    async with asgi_client(app) as c:
        yield c


async def seed(c: httpx.AsyncClient) -> None:
    """a: agent alice, reward 1, a fork; b: agent bob, reward 0; c: alice, open (no reward)."""
    for tid, agent in (("a", "alice"), ("b", "bob"), ("c", "alice")):
        r = await c.post("/api/v1/trajectories", json={"trajectory_id": tid, "metadata": {"agent": agent}})
        assert r.status_code == 201, r.text
    steps = [step("a", 0, list(range(1, 12)), [3]), step("a", 1, [9] * 12, [4]),
             step("b", 0, [1], [2]), step("c", 0, [1], [2])]
    assert (await c.post("/api/v1/steps", json={"steps": steps})).status_code == 200
    for tid, reward in (("a", 1.0), ("b", 0.0)):
        assert (await c.post(f"/api/v1/trajectories/{tid}/complete", json={"reward": reward})).status_code == 200


async def listed(c: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    r = await c.get("/api/v1/trajectories", params=params)
    assert r.status_code == 200, r.text
    return sorted(t["trajectory_id"] for t in r.json()["items"])


CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"agent": "alice"}, ["a", "c"]),
    ({"agent": "alice", "min_reward": "0.5"}, ["a"]),
    ({"continuity": "fork"}, ["a"]),
    ({"status": "open"}, ["c"]),
    ({"has_reward": "false"}, ["c"]),
    ({"trainable": "true", "max_reward": "0.5"}, ["b"]),
    ({"policy_version": "0", "since": "0"}, ["a", "b", "c"]),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
async def test_every_door_selects_the_same_trajectories(client: httpx.AsyncClient, raw: dict[str, Any],
                                                        expected: list[str]) -> None:
    await seed(client)
    assert await listed(client, raw) == expected
    r = await client.post("/api/v1/dashboard/curate", json={"filters": raw, "tags_add": ["dash"]})
    assert r.status_code == 200 and r.json()["matched"] == len(expected), r.text
    r = await client.post("/api/v1/curation", json={"filter": raw, "note": "same"})
    assert r.status_code == 200 and r.json()["updated"] == len(expected), r.text
    assert await listed(client, {**raw}) == expected  # curation changed no field the filters read


@pytest.mark.parametrize("bad", [{"trainable": "maybe"}, {"since": "-1"}, {"policy_version": str(2**31)},
                                 {"status": "nope"}, {"continuity": "sideways"}, {"agent": "a\x00"},
                                 {"min_reward": "nan"}, {"colour": "red"}])
async def test_every_door_refuses_the_same_values(client: httpx.AsyncClient, bad: dict[str, Any]) -> None:
    await seed(client)
    if "colour" not in bad:  # the list ignores query parameters it does not know (as every route does)
        assert (await client.get("/api/v1/trajectories", params=bad)).status_code == 422, bad
    r = await client.post("/api/v1/dashboard/curate", json={"filters": bad, "quality": "bad"})
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_filter", "unknown_filter"), r.text
    name = next(iter(bad))
    assert repr(name) in r.json()["error"]["message"]
    assert (await client.post("/api/v1/curation", json={"filter": bad, "quality": "bad"})).status_code == 422
    with pytest.raises(FilterError):
        parse_filter(bad, ExportFilter)


def test_one_field_set() -> None:
    assert set(BatchFilters.model_fields) - {"min_reward"} == LOCAL_FILTERS
    assert set(ExportFilter.model_fields) == set(TrajectoryFilter.model_fields) | LOCAL_FILTERS
    f = normalize_filters({"trainable_only": "true", "min_reward": "0.75", "quality_in": "good, ok",
                           "agent": 7, "has_reward": None}, channel="train")
    assert f == {"trainable_only": True, "min_reward": 0.75, "quality_in": ["good", "ok"], "agent": "7",
                 "channel": "train"}
    parsed = parse_filter(f, ExportFilter)
    assert parsed.query() == {"agent": "7", "channel": "train", "min_reward": 0.75}
