"""The embedded model as the upstream when none is configured.

The gateway starts ``python -m steplake.model serve --port <free port> [--gguf FILE]`` as a child process
in the background (``/healthz`` answers at once; gateway requests wait while the model loads, up to the
pool's ``ready_wait``, then get a 503 in their protocol's shape) and stops it at shutdown. The child's
output goes to the gateway's stderr. It gets ``--parent-pid`` and exits by itself when this process is gone
without stopping it (SIGKILL, OOM kill, crash): see ``steplake.model.lifeline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from .base import Upstream

log = logging.getLogger("steplake.upstreams.local")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalModelProcess:
    """Owns the child model server process."""

    def __init__(self, gguf: str | None = None, port: int | None = None) -> None:
        self.gguf = gguf
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None

    def upstream(self) -> Upstream:
        return Upstream(root=f"http://127.0.0.1:{self.port}", kind="steplake", declared=True, local=True,
                        loading=True)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "steplake.model", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--parent-pid", str(os.getpid())]  # the child exits when this process is gone, killed or not
        if self.gguf:
            cmd += ["--gguf", self.gguf]
        return cmd

    async def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        log.info("started embedded model server pid %s on port %s", self.proc.pid, self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


__all__ = ["LocalModelProcess", "free_port"]
