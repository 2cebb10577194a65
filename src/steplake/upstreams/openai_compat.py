"""HTTP client for OpenAI-compatible upstreams (aiohttp: measured faster than httpx's AsyncClient), the
per-kind request fields that ask for exact token ids, and the readers that take the ids back out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..types import Json
from .base import Upstream, UpstreamFailure

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class UpstreamClient:
    """One pooled aiohttp session shared by every upstream call of a gateway."""

    def __init__(self, read_timeout: float, connect_timeout: float = 10.0) -> None:
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                          sock_read=self.read_timeout),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "upstream client not started"
        return self._session

    async def get(self, url: str, timeout: float, up: Upstream | None = None) -> tuple[int, bytes]:
        """Plain GET for health checks and detection; raises aiohttp/timeout errors as they are."""
        key = up.extra.get("api_key") if up is not None else None
        headers = {"Authorization": f"Bearer {key}"} if key else None
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), headers=headers) as r:
            return r.status, await r.read()

    async def post_json(self, up: Upstream, path: str, body: Json, timeout: float | None = None, *,
                        at_root: bool = False) -> Json:
        """POST and return the decoded JSON answer; UpstreamFailure on any failure. ``path`` is under ``/v1``
        unless ``at_root`` (or it starts with ``/update``: the servers' weight routes)."""
        resp = await self._open(up, path, body, _JSON_HEADERS, timeout, at_root)
        try:
            data = await self._read(resp)
        finally:
            resp.release()
        try:
            out = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(502, f"upstream {up.root} answered invalid JSON") from None
        if not isinstance(out, dict):
            raise UpstreamFailure(502, f"upstream {up.root} answered a JSON {type(out).__name__}, not an object")
        return out

    async def open_stream(self, up: Upstream, path: str, body: Json, *, at_root: bool = False) -> aiohttp.ClientResponse:
        """POST a streaming request (``path`` under ``/v1`` unless ``at_root``: the servers' native routes); the
        caller iterates ``sse_events`` and must release the response."""
        return await self._open(up, path, body, _SSE_HEADERS, None, at_root)

    async def _open(self, up: Upstream, path: str, body: Json, headers: dict[str, str],
                    timeout: float | None, at_root: bool = False) -> aiohttp.ClientResponse:
        url = up.root + path if at_root or path.startswith("/update") else up.v1 + path
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout)
        key = up.extra.get("api_key")
        if key:
            headers = {**headers, "Authorization": f"Bearer {key}"}
        try:
            resp = await self.session.post(url, data=orjson.dumps(body), headers=headers, **kw)
        except TimeoutError:
            raise UpstreamFailure(504, f"upstream {up.root} did not answer in time") from None
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise UpstreamFailure(502, f"upstream {up.root} is unreachable: {type(e).__name__}: {e}",
                                  retryable=True) from None
        if resp.status >= 400:
            try:
                raw = await self._read(resp)
            except UpstreamFailure:
                raw = b""
            finally:
                resp.release()
            raise failure_from_status(up, resp.status, raw)
        return resp

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.read()
        except TimeoutError:
            raise UpstreamFailure(504, "upstream did not finish its answer in time") from None
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamFailure(502, f"upstream connection failed: {type(e).__name__}: {e}",
                                  retryable=True) from None


def failure_from_status(up: Upstream, status: int, raw: bytes) -> UpstreamFailure:
    body: Any = None
    message = raw.decode("utf-8", "replace")[:2000] or f"HTTP {status}"
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
        elif isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    return UpstreamFailure(status, f"upstream {up.root} answered {status}: {message}", body=body,
                           retryable=status >= 500)


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Yield the payload of each ``data:`` line until ``[DONE]`` or the end of the body.

    Raises UpstreamFailure(502/504) when the connection breaks or stalls mid-stream.
    """
    buf = b""
    try:
        # not ``async for line in resp.content``: aiohttp caps lines at 64 KiB, and a first chunk carrying
        # a long prompt's prompt_token_ids is bigger than that
        async for piece in resp.content.iter_any():
            buf += piece
            if b"\n" not in piece:
                continue
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield payload
    except TimeoutError:
        raise UpstreamFailure(504, "upstream stalled mid-stream") from None
    except (aiohttp.ClientError, OSError) as e:
        raise UpstreamFailure(502, f"upstream connection broke mid-stream: {type(e).__name__}") from None
    # The body ended without [DONE]: an upstream killed mid-stream often looks like this.
    raise UpstreamFailure(502, "upstream stream ended without [DONE]")


# ---- per-kind request fields --------------------------------------------------------------------------

def ask_for_ids_chat(body: Json, kind: str, stream: bool) -> None:
    """Add the fields that make this kind of upstream report token ids and logprobs (in place)."""
    if kind in ("vllm", "steplake"):
        body["return_token_ids"] = True
        body["logprobs"] = True
    elif kind == "sglang":
        body["return_token_ids"] = True
        body["return_prompt_token_ids"] = True
        body["logprobs"] = True
    elif kind == "llamacpp":
        body["logprobs"] = True
    if stream and kind != "openai":
        opts = body.get("stream_options")
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}


def ask_for_ids_completion(body: Json, kind: str, stream: bool) -> None:
    if kind in ("vllm", "steplake", "sglang"):
        body["return_token_ids"] = True
        if kind == "sglang":
            body["return_prompt_token_ids"] = True
    if kind != "openai":
        lp = body.get("logprobs")
        if not isinstance(lp, int) or isinstance(lp, bool) or lp < 1:
            body["logprobs"] = 1
    if stream and kind != "openai":
        opts = body.get("stream_options")
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}


__all__ = ["UpstreamClient", "sse_events", "failure_from_status", "ask_for_ids_chat", "ask_for_ids_completion"]
