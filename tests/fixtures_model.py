"""Pytest plugin: the embedded model, shared by the whole session.

- ``model_server`` (session): ONE ``python -m steplake.model serve --port <free>`` subprocess
  (HF_HUB_OFFLINE=1); yields its base URL ``http://127.0.0.1:PORT`` (no ``/v1``) once ``/health``
  answers 200; terminated at the end of the session. Its log is in the session's temp dir.
- ``local_model`` (session): one ``LocalModel`` loaded in the test process (same weights), to
  recompute logprobs, re-encode text or test the engine directly.

Register with ``pytest_plugins = ["tests.fixtures_model"]`` in the root ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import stop_process, wait_until_up

HEALTH_TIMEOUT_S = float(os.environ.get("STEPLAKE_TEST_MODEL_TIMEOUT", "300"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _src_dir() -> str:
    import steplake

    return str(Path(steplake.__file__).resolve().parents[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    try:
        wait_until_up(url + "/health", HEALTH_TIMEOUT_S, alive, interval=0.5)
    except AssertionError:
        raise RuntimeError(f"model server not healthy after {HEALTH_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}") from None


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the shared embedded-model server subprocess."""
    port = _free_port()
    log = tmp_path_factory.mktemp("model_server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (_src_dir(), os.environ.get("PYTHONPATH")) if p)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "steplake.model", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        stop_process(proc, 20)


@pytest.fixture(scope="session")
def local_model() -> Any:
    """The embedded model loaded in this process (``steplake.model.LocalModel``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from steplake.model import LocalModel

    model = LocalModel()
    model.load()
    return model
