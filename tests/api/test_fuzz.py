"""schemathesis over /openapi.json against a live ``steplake serve``: no input may produce a 5xx.

Excluded: ``/api/v1/events`` (an endless stream), ``/readyz`` (503 is its answer while the gateway's
upstream is down), ``/api/v1/keys`` (a created key would lock every later request out) and
``POST /api/v1/batches`` (``wait_seconds`` long-polls up to 60 s; covered by the hostile-input tests).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.servers import serve_process, subprocess_env

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed")
def test_no_server_errors(tmp_path: Path) -> None:
    with serve_process(tmp_path / "fuzz.db") as url:
        cmd = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", "8", "--phases", "coverage,fuzzing", "--no-shrink",
               "--generation-database", "none", "--request-timeout", "10", "--no-color",
               "--exclude-path", "/api/v1/events", "--exclude-path", "/readyz",
               "--exclude-path-regex", "^/api/v1/keys", "--exclude-path", "/api/v1/batches"]
        proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240,
                              cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
