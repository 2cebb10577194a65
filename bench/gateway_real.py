"""The gateway in front of a real inference server (``bench/gateway.py --upstream-url URL``).

    python bench/gateway.py --upstream-url http://127.0.0.1:8000 [--calls 60] [--kind vllm]

Starts ``steplake serve`` (its own process, a temporary SQLite pool) in front of the server, then makes
``--calls`` pairs of non-streamed chat calls with ``max_tokens: 1``: one straight to the server, one through
the gateway, alternating which goes first, each with a prompt of its own (so the server's prefix cache
favours neither). The figure is the median of the paired differences (gateway − direct): what steplake adds
to a call on this machine, with the server's own time taken out pair by pair. The server's kind and version
(``GET /version``) and the stored steps (all with the server's token ids) are printed with the table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"steplake serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} not ready after {timeout:.0f} s; log {log}")


def _server_info(root: str) -> tuple[str, str]:
    """The served model's name and what the server says it is (``GET /version``), if it says."""
    with httpx.Client(timeout=10) as c:
        models = c.get(f"{root}/v1/models").json().get("data") or [{}]
        model = str(models[0].get("id") or "default")
        try:
            r = c.get(f"{root}/version")
            version = str(r.json().get("version")) if r.status_code == 200 else "?"
        except (httpx.HTTPError, ValueError):
            version = "?"
        return model, f"{models[0].get('owned_by') or 'unknown'} {version}"


def _call(c: httpx.Client, base: str, model: str, text: str) -> float:
    body: dict[str, Any] = {"model": model, "max_tokens": 1, "temperature": 0,
                            "messages": [{"role": "user", "content": text}]}
    t0 = time.perf_counter()
    r = c.post(f"{base}/chat/completions", json=body)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        sys.exit(f"{base}: {r.status_code} {r.text[:300]}")
    return dt * 1000


def bench_real(url: str, calls: int, kind: str | None) -> None:
    root = url.rstrip("/").removesuffix("/v1")
    model, server = _server_info(root)
    tmp = Path(tempfile.mkdtemp(prefix="steplake-bench-real-"))
    port = _free_port()
    log = tmp / "serve.log"
    upstream = f"{kind}+{root}" if kind else root
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "steplake", "serve", "--port", str(port),
                                 "--db", str(tmp / "pool.db"), "--upstream", upstream],
                                stdout=out, stderr=subprocess.STDOUT)
    gw = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{gw}/readyz", proc, 120, log)
        direct: list[float] = []
        through: list[float] = []
        with httpx.Client(timeout=120) as c:
            for i in range(3):  # warm-up: connections, the gateway's first capture
                _call(c, f"{root}/v1", model, f"warm-up {i} direct")
                _call(c, f"{gw}/v1", model, f"warm-up {i} gateway")
            for i in range(calls):
                order = [("d", f"{root}/v1"), ("g", f"{gw}/v1")]
                if i % 2:
                    order.reverse()
                for tag, base in order:
                    ms = _call(c, base, model, f"Pair {i:04d}, call {tag}: say one word.")
                    (direct if tag == "d" else through).append(ms)
            time.sleep(1.0)  # group commit
            stored = c.get(f"{gw}/api/v1/steps", params={"limit": 1000}).json()["items"]
        diffs = [g - d for g, d in zip(through, direct, strict=True)]
        q = statistics.quantiles(diffs, n=20)
        print()
        print(f"server: {server} at {root} (model {model!r}); gateway: steplake serve --upstream {upstream}")
        print("| calls (pairs) | direct p50 ms | gateway p50 ms | added: median of paired differences ms | "
              "added p5..p95 ms |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        print(f"| {calls} | {statistics.median(direct):.1f} | {statistics.median(through):.1f} | "
              f"{statistics.median(diffs):+.2f} | {q[0]:+.1f} .. {q[-1]:+.1f} |")
        sources = Counter(str(s.get("token_source")) for s in stored)
        print(f"stored steps: {len(stored)} (calls through the gateway: {calls + 3}); "
              f"token sources: {dict(sources)}")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"(logs in {tmp})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream-url", required=True)
    ap.add_argument("--calls", type=int, default=60, help="pairs of calls (≥ 50 for the issue's figure)")
    ap.add_argument("--kind", default=None, help="upstream kind prefix (vllm, sglang, ...); default: detected")
    a = ap.parse_args(argv)
    bench_real(a.upstream_url, a.calls, a.kind)


if __name__ == "__main__":
    main()
