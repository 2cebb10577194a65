"""Gateway benchmark: direct upstream vs steplake gateway (capture + durable SQLite on) vs LiteLLM's proxy.

    python bench/gateway.py [--duration 5] [--clients 1,8,32] [--no-litellm] [--fast-path] [--profile]
                            [--prompt-modes chat,tokens] [--token-tokenizer smollm2|tiny] [--tokens-only]
    python bench/gateway.py --upstream-url http://127.0.0.1:8000 [--calls 60]   # a real server: gateway_real.py

Everything runs on this machine: a fast fake vLLM-shaped upstream that returns token ids
(tests/gateway/fake_upstream.py, its own process), ``python -m steplake serve`` in front of it (its own
process), and LiteLLM's proxy in its own virtualenv (created by this script under
~/.cache/steplake-bench/litellm-venv on first use; skipped with a note when it cannot be installed).
Each client sends sequential non-streamed chat completions for ``--duration`` seconds after a warm-up.
"ids preserved" streams 20 answers with ``return_token_ids`` and counts those whose streamed ids equal
the upstream's; for steplake it also checks that every stored step has exactly those ids.
Targets (DESIGN §3): added p50 ≤ 1 ms and p99 ≤ 5 ms at 1 client; ≥ 50 % of direct requests/s at 32.
``--fast-path`` adds a target "steplake-fp": the same app with ``GatewayFastPath`` innermost (proxied calls
skip the app's router). ``--profile`` runs the gateway under cProfile for the 32-client run and prints the top functions (and the
tokens-mode gateway of the token workload).
``--prompt-modes`` (default ``chat,tokens``; ``none`` skips it) then runs the token workload of
bench/gateway_tokens.py: an agent loop with a ~2k-token history and ~200-token tool results through one gateway
per prompt mode, p50/p99 per mode, the renderer's render and bridge cost per call, and a check that every
later tokens-mode step is ``clean`` with ``prompt_mode == "tokens"``; ``--tokens-only`` runs only that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "gateway" / "fake_upstream.py"
KEY = "sk-steplake-bench-0123456789abcdef"  # LiteLLM's master key; the others ignore it
LITELLM_VENV = Path.home() / ".cache" / "steplake-bench" / "litellm-venv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status in ok:
                        return True
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    return False


def spawn(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p: subprocess.Popen[bytes] | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"creating LiteLLM venv at {LITELLM_VENV} (one time) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True,
                       timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"LiteLLM unavailable: {e}")
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
        return None
    return exe if exe.exists() else None


FAST_PATH_SERVER = """
import sys, uvicorn
from starlette.middleware import Middleware
from steplake.app import create_app
from steplake.config import Settings
from steplake.gateway import GatewayFastPath
port, db, up = int(sys.argv[1]), sys.argv[2], sys.argv[3]
app = create_app(Settings(port=port, db=db, upstream=[up]))
app.user_middleware.append(Middleware(GatewayFastPath, gateway=app.state.gateway))  # innermost: after auth
uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
            access_log=False)
"""


# ---- load ---------------------------------------------------------------------------------------------------

def chat_body(i: int, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": "fake-model", "max_tokens": 32,
                            "messages": [{"role": "user", "content": f"request number {i}"}]}
    if stream:
        body.update(stream=True, return_token_ids=True)
    return orjson.dumps(body)


async def run_load(base: str, clients: int, duration: float, warmup: float = 1.0) -> dict[str, float]:
    url = base + "/chat/completions"
    lat: list[float] = []
    counter = 0
    errors = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {KEY}"}) as s:
        t_start = time.perf_counter()
        t_measure = t_start + warmup
        t_end = t_measure + duration

        async def worker() -> None:
            nonlocal counter, errors
            while True:
                counter += 1
                body = chat_body(counter)
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                async with s.post(url, data=body) as r:
                    await r.read()
                    ok = r.status == 200
                t1 = time.perf_counter()
                if t0 >= t_measure:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
        await asyncio.gather(*(worker() for _ in range(clients)))
    lat.sort()
    n = len(lat)
    return {"n": n, "rps": n / duration, "p50": lat[n // 2] * 1000 if n else float("nan"),
            "p99": lat[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
            "mean": statistics.fmean(lat) * 1000 if n else float("nan"), "errors": errors}


async def check_ids(base: str, n: int = 20) -> tuple[int, list[list[int]]]:
    """Stream n answers asking for token ids; count those whose ids are exactly the upstream's."""
    good = 0
    seen: list[list[int]] = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}) as s:
        for i in range(n):
            ids: list[int] = []
            text = ""
            async with s.post(base + "/chat/completions", data=chat_body(10_000 + i, stream=True)) as r:
                async for raw in r.content:
                    line = raw.strip()
                    if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                        continue
                    chunk = orjson.loads(line[5:])
                    for ch in chunk.get("choices") or []:
                        ids += ch.get("token_ids") or []
                        text += (ch.get("delta") or {}).get("content") or ""
            expected = [*text.encode(), 1]
            seen.append(expected)
            good += ids == expected
    return good, seen


# ---- main ---------------------------------------------------------------------------------------------------

async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="steplake-bench-"))
    up_port, gw_port, ll_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(spawn([sys.executable, str(FAKE), "--port", str(up_port)], {"PYTHONPATH": str(ROOT)}))
        assert await wait_http(f"http://127.0.0.1:{up_port}/health", 20), "fake upstream did not start"
        gw_cmd = [sys.executable, "-m", "steplake", "serve", "--port", str(gw_port), "--db", str(tmp / "bench.db"),
                  "--upstream", f"vllm+http://127.0.0.1:{up_port}"]
        if args.profile:
            gw_cmd = [sys.executable, "-m", "cProfile", "-o", str(tmp / "gw.prof"), "-m", "steplake", *gw_cmd[3:]]
        procs.append(spawn(gw_cmd, log=tmp / "gateway.log"))
        assert await wait_http(f"http://127.0.0.1:{gw_port}/readyz", 60), "gateway did not become ready"
        targets = {"direct": f"http://127.0.0.1:{up_port}/v1", "steplake": f"http://127.0.0.1:{gw_port}/v1"}
        if args.fast_path:
            fp_port = free_port()
            procs.append(spawn([sys.executable, "-c", FAST_PATH_SERVER, str(fp_port), str(tmp / "fp.db"),
                                f"vllm+http://127.0.0.1:{up_port}"], log=tmp / "fast-path.log"))
            assert await wait_http(f"http://127.0.0.1:{fp_port}/readyz", 60), "fast-path gateway did not start"
            targets["steplake-fp"] = f"http://127.0.0.1:{fp_port}/v1"
        if not args.no_litellm and not args.tokens_only:
            exe = ensure_litellm()
            if exe is not None:
                procs.append(spawn([str(exe), "--model", "openai/fake-model", "--api_base",
                                    f"http://127.0.0.1:{up_port}/v1", "--port", str(ll_port), "--num_workers", "1"],
                                   {"OPENAI_API_KEY": "x", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": KEY}, log=tmp / "litellm.log"))
                if await wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", 120):
                    targets["litellm"] = f"http://127.0.0.1:{ll_port}/v1"
                else:
                    print(f"LiteLLM proxy did not start; see {tmp / 'litellm.log'}")
        results: dict[tuple[str, int], dict[str, float]] = {}
        ids: dict[str, str] = {}
        for name, base in ({} if args.tokens_only else targets).items():
            good, expected = await check_ids(base)
            ids[name] = f"{good}/{len(expected)}"
            for c in args.clients:
                results[(name, c)] = await run_load(base, c, args.duration)
                print(f"  {name:9s} {c:3d} clients: {results[(name, c)]['rps']:8.0f} req/s", flush=True)
        if not args.tokens_only:
            report(results, ids, targets, args.clients)
            print(stored_report(tmp / "bench.db"))
        if args.prompt_modes:
            from gateway_tokens import bench_tokens  # bench/ is on sys.path when run as a script

            procs += await bench_tokens(args.prompt_modes, f"vllm+http://127.0.0.1:{up_port}", tmp,
                                        args.token_tokenizer, args.token_episodes, spawn, wait_http, free_port,
                                        args.profile)
    finally:
        for p in reversed(procs):
            stop(p)
        for prof in ("gw.prof", "gw-tokens.prof"):
            if args.profile and (tmp / prof).exists():
                import pstats

                print(f"-- {prof}")
                pstats.Stats(str(tmp / prof)).sort_stats("cumulative").print_stats(35)
        print(f"(logs in {tmp})")


def stored_report(db: Path) -> str:
    """Every stored gateway step must carry upstream ids whose length matches usage."""
    con = sqlite3.connect(db)
    try:
        total, upstream = con.execute(
            "SELECT COUNT(*), SUM(token_source = 'upstream' AND response_len > 0) FROM steps").fetchone()
    except sqlite3.Error as e:
        return f"stored steps: cannot read ({e})"
    finally:
        con.close()
    return f"stored steps: {total}, with upstream token ids: {upstream}"


def report(results: dict[tuple[str, int], dict[str, float]], ids: dict[str, str], targets: dict[str, str],
           clients: list[int]) -> None:
    print()
    print("| target | clients | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | % of direct req/s | ids preserved |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in targets:
        for c in clients:
            r, d = results[(name, c)], results[("direct", c)]
            print(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['p50'] - d['p50']:+.2f} | {r['p99'] - d['p99']:+.2f} | {100 * r['rps'] / d['rps']:.0f} % | "
                  f"{ids[name]} |")
    s1, d1 = results[("steplake", clients[0])], results[("direct", clients[0])]
    sN, dN = results[("steplake", clients[-1])], results[("direct", clients[-1])]
    print()
    print(f"target added p50 <= 1 ms at {clients[0]} client: {s1['p50'] - d1['p50']:.2f} ms "
          f"{'PASS' if s1['p50'] - d1['p50'] <= 1 else 'MISS'}")
    print(f"target added p99 <= 5 ms at {clients[0]} client: {s1['p99'] - d1['p99']:.2f} ms "
          f"{'PASS' if s1['p99'] - d1['p99'] <= 5 else 'MISS'}")
    print(f"target >= 50% of direct req/s at {clients[-1]} clients: {100 * sN['rps'] / dN['rps']:.0f} % "
          f"{'PASS' if sN['rps'] >= 0.5 * dN['rps'] else 'MISS'}")
    if ("litellm", clients[-1]) in results:
        ll = results[("litellm", clients[-1])]
        print(f"steplake / LiteLLM throughput at {clients[-1]} clients: {sN['rps'] / max(ll['rps'], 1e-9):.1f}x")


def main() -> None:
    if any(a == "--upstream-url" or a.startswith("--upstream-url=") for a in sys.argv[1:]):
        from gateway_real import main as real  # the gateway in front of a real server (vLLM, ...)

        real(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    ap.add_argument("--fast-path", action="store_true", help="also measure the app with GatewayFastPath")
    ap.add_argument("--profile", action="store_true", help="run the gateway under cProfile")
    ap.add_argument("--prompt-modes", default="chat,tokens",
                    help="the token workload's gateways, one per prompt mode (chat,tokens,auto); none: skip it")
    ap.add_argument("--token-tokenizer", choices=("smollm2", "tiny"), default="smollm2",
                    help="the gateways' --tokenizer for the token workload")
    ap.add_argument("--token-episodes", type=int, default=20, help="measured trajectories per prompt mode")
    ap.add_argument("--tokens-only", action="store_true", help="run only the token workload")
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.prompt_modes = [m for m in args.prompt_modes.split(",") if m and m != "none"]
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
