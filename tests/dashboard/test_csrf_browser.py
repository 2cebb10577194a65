"""Cross-site request forgery from a real browser (issue 12.2): a page served from another origin fires the
``no-cors`` ``text/plain`` fetches a browser lets any page send, against a real ``steplake serve``, with an admin
signed in to the dashboard (the cookie travels: same site, other port) and against a keyless server (from
``localhost`` to ``127.0.0.1``). Nothing changes: no key minted, nothing curated, no policy published."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from steplake.store.sqlite import SqliteStore
from tests.api.helpers import step

from .conftest import Server, start_server, stop_server

pytestmark = pytest.mark.browser

ATTACK = """<!doctype html><title>cute cats</title><script>
const target = %s;
const shots = [
  ["/api/v1/keys", {scope: "admin", name: "pwned"}],
  ["/api/v1/curation", {filter: {}, quality: "bad", trainable: false, tags_add: ["pwned"]}],
  ["/api/v1/policy", {version: 777}],
  ["/api/v1/trajectories/victim/complete", {reward: 99}],
];
Promise.allSettled(shots.map(([path, body]) => fetch(target + path, {
  method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body),
}))).then(results => { window.outcome = results.map(r => r.status); });
</script>"""


@contextmanager
def attacker_site(target: str) -> Iterator[int]:
    """A second HTTP server on another 127.0.0.1 port serving the attack page; yields its port."""
    page = (ATTACK % json.dumps(target)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def refused(url: str, headers: dict[str, str]) -> int:
    text = httpx.get(url + "/metrics", headers=headers).text
    m = re.search(r'steplake_http_requests_total\{code="403"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def seed(url: str, headers: dict[str, str]) -> None:
    for tid in ("victim", "bystander"):
        r = httpx.post(url + "/api/v1/steps", json={"steps": [step(tid, 0, [1, 2], [3])]}, headers=headers)
        assert r.status_code == 200, r.text


def pool_state(url: str, headers: dict[str, str]) -> dict[str, Any]:
    keys = httpx.get(url + "/api/v1/keys", headers=headers).json()["items"]
    trajectories = {t["trajectory_id"]: t for t in
                    httpx.get(url + "/api/v1/trajectories", headers=headers).json()["items"]}
    return {"keys": sorted(k["key_id"] for k in keys if k["revoked_at"] is None),
            "curation": {tid: (t.get("curation") or {}).get("quality", "unreviewed") for tid, t in trajectories.items()},
            "trainable": {tid: (t.get("curation") or {}).get("trainable", True) for tid, t in trajectories.items()},
            "status": {tid: (t["status"], t["reward"]) for tid, t in trajectories.items()},
            "policy": httpx.get(url + "/api/v1/policy", headers=headers).json().get("version")}


def run_attack(browser: Any, attacker_url: str, server: Server, headers: dict[str, str],
               sign_in: str | None = None) -> None:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    try:
        if sign_in is not None:  # the admin signs the dashboard in: HttpOnly, SameSite=Strict cookie
            dash = context.new_page()
            dash.goto(server.url + "/")
            status = dash.evaluate("""key => fetch("/api/v1/session", {method: "POST",
                headers: {"content-type": "application/json"}, body: JSON.stringify({key})}).then(r => r.status)""",
                                   sign_in)
            assert status == 200
            assert dash.evaluate('fetch("/api/v1/keys").then(r => r.status)') == 200  # the cookie signs in
        before = refused(server.url, headers)
        page = context.new_page()
        page.goto(attacker_url)
        page.wait_for_function("window.outcome !== undefined")
        assert page.evaluate("window.outcome") == ["fulfilled"] * 4  # opaque answers: the requests went out
        assert refused(server.url, headers) - before == 4  # ... reached the server and were refused
    finally:
        context.close()


def test_signed_in_admin_is_not_used_by_another_origin(browser: Any, tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    store = SqliteStore(str(db))
    store.open()
    _, secret = store.create_key("admin", "owner")
    store.close()
    server = start_server(db)
    try:
        headers = {"authorization": f"Bearer {secret}"}
        seed(server.url, headers)
        before = pool_state(server.url, headers)
        port = int(server.url.rsplit(":", 1)[1])
        with attacker_site(f"http://127.0.0.1:{port}") as attacker_port:  # same site, other origin
            run_attack(browser, f"http://127.0.0.1:{attacker_port}/", server, headers, sign_in=secret)
        after = pool_state(server.url, headers)
        assert after == before and set(after["curation"]) == {"victim", "bystander"}
        assert after["policy"] != 777 and len(after["keys"]) == 1
    finally:
        stop_server(server)


def test_keyless_server_is_not_used_by_another_origin(browser: Any, tmp_path: Path) -> None:
    server = start_server(tmp_path / "pool.db")
    try:
        seed(server.url, {})
        before = pool_state(server.url, {})
        with attacker_site(server.url) as attacker_port:  # a page on localhost against 127.0.0.1
            run_attack(browser, f"http://localhost:{attacker_port}/", server, {})
        after = pool_state(server.url, {})
        assert after == before and after["keys"] == [] and after["policy"] != 777
        assert httpx.get(server.url + "/api/v1/session").json()["keys_required"] is False  # agents not locked out
    finally:
        stop_server(server)
