"""Secrets in reward configurations (an HTTP reward model's ``api_key`` and ``headers``, a judge's
``api_key``, a password in a URL) never reach a reward record, an event, a log line or an export.

Reward records name the function, its version and ``config_sha256``, a hash of its configuration with
secrets replaced by ``***`` (rotating a key does not change it, and the hash reveals nothing of the key).
Whatever a function returns or raises is scrubbed of the configured secret values before it is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

MASK = "***"
SECRET_KEY_RE = re.compile(r"(?:^|[_\-.])(?:api[_-]?key|apikey|key|token|secret|password|passwd|pwd|authori[sz]ation"
                           r"|auth|bearer|cookie|credentials?|headers)$", re.IGNORECASE)
MIN_SECRET_LEN = 4  # shorter values are not scrubbed from free text (they would mask ordinary words)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif value is not None and not isinstance(value, bool | int | float):
        yield str(value)


def _url_secrets(text: str) -> list[str]:
    if "://" not in text:
        return []
    try:
        parts = urlsplit(text)
        found = [parts.password] if parts.password else []
        found += [v for k, v in parse_qsl(parts.query) if SECRET_KEY_RE.search(k)]
    except ValueError:
        return []
    return found


def secret_values(params: Mapping[str, Any]) -> set[str]:
    """Every secret string in ``params``: values under secret-looking keys, passwords and keys in URLs."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or bool(SECRET_KEY_RE.search(str(k))))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, secret)
        elif secret:
            found.update(_strings(value))
        elif isinstance(value, str):
            found.update(_url_secrets(value))
    walk(params, False)
    found |= {s.partition(" ")[2] for s in found if s.lower().startswith("bearer ")}
    return {s for s in found if s}


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every secret replaced by ``***`` (safe to show, hash or store)."""
    secrets = secret_values(params)

    def walk(value: Any, secret: bool) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, secret or bool(SECRET_KEY_RE.search(str(k)))) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, secret) for v in value]
        if secret and isinstance(value, str):
            return MASK
        return scrub(value, secrets)
    return walk(params, False)  # type: ignore[no-any-return]


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (JSON-like) with each occurrence of a secret string replaced by ``***``."""
    needles = sorted((s for s in secrets if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)
    if not needles:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for n in needles:
                if n in v:
                    v = v.replace(n, MASK)
            return v
        if isinstance(v, Mapping):
            return {walk(k) if isinstance(k, str) else k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v
    return walk(value)


def config_sha256(name: str, component: str, version: str | None, params: Mapping[str, Any]) -> str:
    """A stable hash of one function's configuration, secrets masked."""
    doc = {"name": name, "component": component, "version": version, "params": redact_params(params)}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def redact_reward(record: dict[str, Any]) -> dict[str, Any]:
    """A stored reward record as it may be answered: ``details.params`` of records written before secrets
    were kept out of them is masked."""
    details = record.get("details")
    if not isinstance(details, dict) or not isinstance(details.get("params"), Mapping):
        return record
    return {**record, "details": {**details, "params": redact_params(details["params"])}}


__all__ = ["MASK", "secret_values", "redact_params", "scrub", "config_sha256", "redact_reward"]
