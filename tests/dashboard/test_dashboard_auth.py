"""With API keys configured, the page and its SSE stream need the session cookie; sign-in works in chromium."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server, _env, shoot, start_server, stop_server


def create_key(db: Path, scope: str) -> str:
    out = subprocess.run([sys.executable, "-m", "steplake", "keys", "create", "--scope", scope, "--db", str(db)],
                         env=_env(), capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip().splitlines()[-1].strip()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    db = tmp_path_factory.mktemp("dashboard-keys") / "pool.db"
    admin = create_key(db, "admin")
    trainer = create_key(db, "trainer")
    server = start_server(db)
    yield server, admin, trainer
    stop_server(server)


def test_page_and_events_refuse_requests_without_the_session(keyed: tuple[Server, str, str]) -> None:
    server, admin, _ = keyed
    with httpx.Client(base_url=server.url, timeout=10) as c:
        page = c.get("/")
        assert page.status_code == 401
        assert "signin-form" in page.text  # the shell that shows the sign-in form
        assert c.get("/api/v1/events").status_code == 401
        assert c.get("/api/v1/dashboard/overview").status_code == 401
        assert c.get("/api/v1/trajectories").status_code == 401
        assert c.get("/static/js/app.js").status_code == 200  # code only, no data
        c.cookies.set("steplake_session", "forged")
        assert c.get("/").status_code == 401
        assert c.get("/api/v1/events").status_code == 401
        c.cookies.clear()
        r = c.post("/api/v1/session", json={"key": admin})
        assert r.status_code == 200
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 200
        with c.stream("GET", "/api/v1/events") as ev:
            assert ev.status_code == 200
            assert ev.headers["content-type"].startswith("text/event-stream")
        assert c.get("/api/v1/dashboard/overview").status_code == 200


@pytest.mark.browser
def test_sign_in_with_an_admin_key(keyed: tuple[Server, str, str], page: Any) -> None:
    from playwright.sync_api import expect

    server, admin, trainer = keyed
    page.goto(server.url + "/")
    form = page.locator("#signin-form")
    expect(form).to_be_visible()
    shoot(page, "signin")
    page.fill("#signin-key", "not-a-key")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("invalid")
    page.fill("#signin-key", trainer)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("admin")
    page.fill("#signin-key", admin)
    page.click("#signin-form button[type=submit]")
    expect(page.locator('[data-counter="Steps"]')).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["steplake_session"]["httpOnly"] is True
    assert page.evaluate("document.cookie") == ""  # HttpOnly: invisible to scripts
    page.reload()
    expect(page.locator('[data-counter="Steps"]')).to_be_visible()
    page.click("#sign-out")
    expect(form).to_be_visible()
    assert page.request.get(server.url + "/api/v1/events").status == 401
