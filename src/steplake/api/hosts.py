"""The names a server answers for (``Host`` header, DNS rebinding) and the origins that are its own (CSRF).

A server answers for the host it binds (``--host``), the host of ``--public-url``, each ``--allowed-hosts``
entry (``name``, ``.example.com`` for the domain and its subdomains, ``*`` for any) and, when bound to
loopback or to every interface, the loopback names ``127.0.0.1``, ``localhost`` and ``[::1]``. Bound to every
interface (``0.0.0.0``, ``::``) it also answers for the machine's host name and any IP address: an address
literal cannot be rebound by DNS, so it only reaches this server when the client meant this server.

An ``Origin`` is the server's own when it names the host and port the request was sent to (the ``Host``
header, which is checked first) or the origin of ``--public-url``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Settings

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` (``[v6]:port`` for IPv6) → (lowercase name without brackets or final dot, port).
    ``("", None)`` for a value that is no host."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return "", None
        port_text = rest[1:]
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return "", None
        port = int(port_text)
    return name.rstrip("."), port


@dataclass(frozen=True)
class HostPolicy:
    """The names a server answers for; ``names`` None means any."""

    names: frozenset[str] | None
    suffixes: tuple[str, ...] = ()
    any_ip: bool = False

    def allows(self, host_header: str) -> bool:
        name, _ = split_host(host_header)
        if not name:
            return False
        if self.names is None or name in self.names:
            return True
        if self.any_ip and is_ip_literal(name):
            return True
        return any(name == s[1:] or name.endswith(s) for s in self.suffixes)

    def describe(self) -> str:
        if self.names is None:
            return "any host"
        shown = sorted(self.names) + [f"*{s}" for s in self.suffixes] + (["any IP address"] if self.any_ip else [])
        return ", ".join(shown)


def host_policy(settings: Settings) -> HostPolicy:
    """The names ``settings`` bind and announce, plus ``allowed_hosts``."""
    bound = settings.host.strip().lower().strip("[]")
    wildcard = bound in WILDCARD_HOSTS
    names: set[str] = set()
    suffixes: list[str] = []
    if not wildcard:
        names.add(bound)
    if wildcard or is_loopback(bound):
        names |= LOOPBACK_NAMES
    if wildcard:
        names.add(socket.gethostname().lower())
    if settings.public_url:
        public = urlsplit(settings.public_url).hostname
        if public:
            names.add(public.rstrip("."))
    for entry in settings.allowed_hosts:
        entry = entry.strip().lower()
        if entry == "*":
            return HostPolicy(None)
        if entry.startswith("."):
            suffixes.append(entry.rstrip("."))
        elif entry:
            name, _ = split_host(entry)
            if name:
                names.add(name)
    return HostPolicy(frozenset(names), tuple(suffixes), any_ip=wildcard)


def _origin_key(scheme: str, name: str, port: int | None) -> tuple[str, int] | None:
    default = DEFAULT_PORTS.get(scheme)
    if not name or (port is None and default is None):
        return None
    return name.rstrip("."), port if port is not None else default  # type: ignore[return-value]


def origin_of(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an origin or base URL (the port made explicit); None for ``null`` or garbage."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    return _origin_key(parts.scheme, parts.hostname or "", port)


def is_own_origin(origin: str, host_header: str, public_url: str | None) -> bool:
    """Whether a browser's ``Origin`` is this server's: the host and port the request went to (``Host``; a Host
    without a port matches the origin scheme's default port) or the origin of ``public_url``."""
    theirs = origin_of(origin)
    if theirs is None:
        return False
    if public_url and origin_of(public_url) == theirs:
        return True
    name, port = split_host(host_header)
    if not name:
        return False
    scheme = urlsplit(origin.strip().lower()).scheme
    return _origin_key(scheme, name, port) == theirs


__all__ = ["HostPolicy", "host_policy", "is_loopback", "is_own_origin", "origin_of", "split_host",
           "LOOPBACK_NAMES"]
