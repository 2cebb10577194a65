""".ci/run stops the PostgreSQL server it started (scripts/ci_postgres.sh), and only that one.

Runs scripts/start_postgres.sh on a port and data directory of its own (never the shared test server)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not BIN or not os.path.exists(BIN[-1] + "/initdb"),
                                reason="Debian's postgresql is not installed (.ci/run installs it)")


@pytest.fixture
def own_cluster() -> Iterator[dict[str, str]]:
    data = f"/tmp/steplake-pg-citest-{uuid.uuid4().hex[:8]}"  # under /tmp: the postgres user must reach it
    env = {**os.environ, "STEPLAKE_PG_PORT": str(free_port()), "STEPLAKE_PG_DATA": data,
           "STEPLAKE_PG_DB": "citest"}
    env.pop("STEPLAKE_KEEP_PG", None)
    yield env
    subprocess.run(["bash", "scripts/start_postgres.sh", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    shutil.rmtree(data, ignore_errors=True)


def ci_shell(env: dict[str, str], status: int = 0) -> subprocess.CompletedProcess[str]:
    """What .ci/run does around the tests: source the helper, start, run something that exits ``status``."""
    script = ". scripts/ci_postgres.sh\nsteplake_pg_up\necho \"url=$STEPLAKE_TEST_PG_URL\"\n" \
             f"(exit {status})\necho not-reached\n"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def running(env: dict[str, str]) -> bool:
    r = subprocess.run([BIN[-1] + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", env["STEPLAKE_PG_PORT"]],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def test_ci_stops_the_server_it_started_even_when_tests_fail(own_cluster: dict[str, str]) -> None:
    r = ci_shell(own_cluster, status=3)
    assert r.returncode == 3 and "not-reached" not in r.stdout, r.stderr  # the tests' status is kept
    assert f"url=postgresql://postgres:postgres@127.0.0.1:{own_cluster['STEPLAKE_PG_PORT']}/citest" in r.stdout
    assert "stopped the server of" in r.stderr
    assert not running(own_cluster)


def test_ci_leaves_a_server_it_did_not_start_or_was_told_to_keep(own_cluster: dict[str, str]) -> None:
    kept = ci_shell({**own_cluster, "STEPLAKE_KEEP_PG": "1"})
    assert kept.returncode == 0, kept.stderr
    assert running(own_cluster)
    reused = ci_shell(own_cluster)  # a second run finds it running: not its to stop
    assert reused.returncode == 0 and "stopped" not in reused.stderr, reused.stderr
    assert running(own_cluster)
    first = subprocess.run(["bash", "scripts/start_postgres.sh"], cwd=ROOT, env=own_cluster, capture_output=True,
                           text=True, timeout=120).stdout.splitlines()
    assert first[-2] == f"reused 127.0.0.1:{own_cluster['STEPLAKE_PG_PORT']}" and first[-1].startswith("postgresql://")
