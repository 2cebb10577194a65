"""DNS rebinding (issue 12.2): ``steplake serve`` answers only for the hosts it binds, announces and allows."""

from __future__ import annotations

from pathlib import Path

import httpx

from steplake.api.hosts import HostPolicy, is_own_origin, split_host
from tests.api.servers import serve_process


def test_host_and_origin_helpers() -> None:
    assert split_host("[::1]:8000") == ("::1", 8000) and split_host("LocalHost.") == ("localhost", None)
    assert split_host("a:b") == ("", None) and split_host("x:99999") == ("", None)
    policy = HostPolicy(frozenset({"127.0.0.1", "localhost"}), (".example.com",))
    assert policy.allows("localhost:1") and policy.allows("api.example.com") and policy.allows("example.com")
    assert not policy.allows("evil.com") and not policy.allows("notexample.com") and not policy.allows("")
    assert is_own_origin("http://127.0.0.1:8000", "127.0.0.1:8000", None)
    assert is_own_origin("https://proxy.example", "proxy.example", None)
    assert not is_own_origin("http://localhost:8000", "127.0.0.1:8000", None)
    assert not is_own_origin("http://127.0.0.1:8001", "127.0.0.1:8000", None)
    assert not is_own_origin("null", "127.0.0.1:8000", None)


def raw_host(url: str, host: str, path: str = "/api/v1/stats") -> httpx.Response:
    return httpx.get(url + path, headers={"host": host}, timeout=10)


def test_serve_refuses_foreign_host_headers(tmp_path: Path) -> None:
    with serve_process(tmp_path / "pool.db") as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", "LOCALHOST."):
            assert raw_host(url, host).status_code == 200, host
        for host in (f"evil.example:{port}", "rebind.attacker.test", f"10.1.2.3:{port}", "localhost.evil.example"):
            r = raw_host(url, host)
            assert r.status_code == 421, (host, r.text)
            assert r.json()["error"]["code"] == "unknown_host" and "--allowed-hosts" in r.json()["error"]["message"]
        r = httpx.post(url + "/api/v1/keys", json={"scope": "admin"}, headers={"host": f"evil.example:{port}"})
        assert r.status_code == 421
        assert httpx.get(url + "/api/v1/keys").json()["items"] == []


def test_serve_answers_allowed_and_announced_hosts(tmp_path: Path) -> None:
    with serve_process(tmp_path / "pool.db", "--allowed-hosts", "steplake.internal", "--allowed-hosts",
                       ".corp.example", "--public-url", "https://gw.example.org/") as url:
        for host in ("steplake.internal:1234", "gw.example.org", "a.corp.example", "127.0.0.1"):
            assert raw_host(url, host).status_code == 200, host
        for host in ("steplake.internal.evil", "example.org"):
            assert raw_host(url, host).status_code == 421, host
