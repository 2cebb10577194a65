"""Slow and vanishing clients against a real ``steplake serve`` over raw sockets (issue 12.11): headers incomplete
after ``--header-timeout`` → connection closed; a body idle for ``--body-timeout`` → 408; a client that
disconnects mid-body → one log line; 600 such connections open → a normal call still answers within 1 s."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.api.helpers import step
from tests.api.servers import steplake_cmd, subprocess_env
from tests.conftest import free_port
from tests.procs import stop_process, wait_until_up


@dataclass
class Served:
    url: str
    port: int
    log: Path


@contextmanager
def serve(tmp_path: Path, *extra: str) -> Iterator[Served]:
    """``steplake serve`` (info log level) whose output goes to a file the test reads."""
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = steplake_cmd("serve", "--db", str(tmp_path / "pool.db"), "--port", str(port), "--upstream",
                       "http://127.0.0.1:9", "--log-level", "info", *extra)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"steplake serve exited with {proc.returncode}: {log.read_text()[-3000:]}")

    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", 30, alive)
        yield Served(f"http://127.0.0.1:{port}", port, log)
    finally:
        stop_process(proc)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x00" * 8)  # no TIME_WAIT pile-up
    return s


def partial_headers(port: int) -> socket.socket:
    s = connect(port)
    s.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return s


def partial_body(port: int, path: str = "/api/v1/steps", declared: int = 1000) -> socket.socket:
    s = connect(port)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {declared}\r\n\r\n".encode() + b'{"steps": [')
    return s


def read_all(s: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until the server closes; and the seconds it took."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data, time.monotonic() - t0


def read_response(s: socket.socket) -> bytes:
    """One response with a Content-Length, the connection left open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(ln.split(b":")[1]) for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_incomplete_headers_close_the_connection(tmp_path: Path) -> None:
    with serve(tmp_path, "--header-timeout", "1") as srv:
        silent, partial, trickle = connect(srv.port), partial_headers(srv.port), partial_headers(srv.port)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 5:  # a byte every 0.2 s: never idle, still too slow
                trickle.sendall(b"x")
                time.sleep(0.2)
        except OSError:  # reset by the server
            pass
        assert time.monotonic() - t0 < 2.5
        for s in (silent, partial, trickle):
            try:
                data, _ = read_all(s, 5)
            except ConnectionResetError:
                data = b""
            assert data == b"", data  # closed, nothing answered
            s.close()
        assert time.monotonic() - t0 < 3
        # a kept-alive connection that starts a second request and stalls is closed too
        s = connect(srv.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data, took = read_all(s, 5)
        assert data == b"" and took < 3
        s.close()
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_idle_body_gets_408(tmp_path: Path) -> None:
    with serve(tmp_path, "--body-timeout", "1") as srv:
        for path in ("/api/v1/steps", "/v1/chat/completions", "/v1/messages"):
            s = partial_body(srv.port, path)
            data, took = read_all(s, 10)
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), data
            assert b"connection: close" in head.lower() and 0.9 < took < 5
            answer = json.loads(body)
            message = answer["error"]["message"]
            assert "idle" in message and (answer.get("type") == "error") == path.endswith("messages")
        # a body that keeps arriving (each gap shorter than the timeout) is not cut
        raw = json.dumps({"steps": [step("slow-ok", 0, [1, 2, 3], [4])]}).encode()
        s = connect(srv.port)
        s.sendall(b"POST /api/v1/steps HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(raw)).encode() + b"\r\nConnection: close\r\n\r\n")
        parts = [raw[i:i + len(raw) // 4 + 1] for i in range(0, len(raw), len(raw) // 4 + 1)]
        for part in parts:
            time.sleep(0.6)
            s.sendall(part)
        data, _ = read_all(s, 10)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data
    assert srv.log.read_text().count("request body idle for 1 s") == 3


def test_disconnect_mid_body_logs_one_line(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        for i in range(20):
            s = partial_body(srv.port, "/api/v1/steps" if i % 2 else "/v1/chat/completions")
            time.sleep(0.05)
            s.close()
        time.sleep(1)
        assert httpx.get(srv.url + "/healthz").status_code == 200
    log = srv.log.read_text()
    lines = [ln for ln in log.splitlines() if "disconnected mid-body" in ln]
    assert len(lines) == 20, log[-3000:]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]


def test_600_slow_connections_do_not_slow_a_normal_call(tmp_path: Path) -> None:
    with serve(tmp_path) as srv, ExitStack() as stack, httpx.Client(base_url=srv.url, timeout=10) as client:
        for i in range(600):
            s = partial_headers(srv.port) if i % 2 else partial_body(srv.port)
            stack.callback(s.close)
        time.sleep(0.5)
        for i in range(5):
            t0 = time.monotonic()
            r = client.post("/api/v1/steps", json={"steps": [step(f"busy-{i}", 0, [1], [2])]})
            assert r.status_code == 200, r.text
            assert client.get("/api/v1/stats").status_code == 200
            assert time.monotonic() - t0 < 1.0
