"""Python client for the steplake HTTP API: ``Client`` (sync) and ``AsyncClient`` (asyncio), both on httpx.

Every endpoint method is written once in ``_Endpoints`` and returns the decoded JSON answer (the async
client returns an awaitable of it). Errors raise the ``steplake.errors`` class matching the HTTP status,
rebuilt from the JSON error (``message``, ``code``); ``get_*`` methods return ``None`` on 404. A server
that cannot be reached raises ``ServiceUnavailableError`` (code ``connection_error``).

    from steplake import Client
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        t = c.create_trajectory(metadata={"task": "gsm8k-17"})
        c.submit_steps([{"trajectory_id": t["trajectory_id"], "step_index": 0, "prompt_ids": [1, 2],
                         "response_ids": [3]}])
        c.complete(t["trajectory_id"], reward=1.0)
        batch = c.fetch_batch(groups=8, recipe="grpo", tensors="numpy")   # batch["tensors"]
        c.ack(batch["batch_id"])
"""

from __future__ import annotations

import shutil
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from . import errors as E
from .types import Json

R = TypeVar("R")
API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"

_BY_STATUS: dict[int, type[E.SteplakeError]] = {
    400: E.BadRequestError, 401: E.AuthenticationError, 403: E.PermissionDeniedError, 404: E.NotFoundError,
    409: E.ConflictError, 413: E.PayloadTooLargeError, 422: E.ValidationError, 429: E.RateLimitError,
    502: E.UpstreamError, 503: E.ServiceUnavailableError, 504: E.UpstreamTimeoutError, 507: E.StorageFullError,
}
_BY_CODE: dict[str, type[E.SteplakeError]] = {
    "policy_reload_failed": E.PolicyReloadError, "capture_failed": E.CaptureFailedError,
}


def error_from_response(status: int, body: bytes) -> E.SteplakeError:
    """Rebuild the server's error (OpenAI or Anthropic shape) as a ``steplake.errors`` exception."""
    message, code, etype, details = f"HTTP {status}", None, None, None
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code, etype, details = err.get("code"), err.get("type"), err.get("details")
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}: {text[:500]}" if text else message
    cls = _BY_CODE.get(str(code), _BY_STATUS.get(status, E.SteplakeError))
    if status == 503 and etype == "store_error":
        cls = E.StoreError
    exc = cls(message, code=code, details=details)
    if exc.status != status:
        exc.status = status
    return exc


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _step_json(step: Any) -> Any:
    if isinstance(step, BaseModel):
        return step.model_dump(exclude_none=True)
    return step


def _check_reloads(answer: Any) -> Any:
    """A publish answered 2xx must not hide a failed reload (a server predating the rule answered 200)."""
    gateway = answer.get("gateway") if isinstance(answer, dict) else None
    ups = gateway.get("upstreams") if isinstance(gateway, dict) else None
    failed = [u for u in ups or [] if isinstance(u, dict) and u.get("reloadable") is not False
              and u.get("kind") in ("steplake", "sglang") and answer.get("weights_path") and not u.get("reloaded")]
    if failed:
        raise E.PolicyReloadError(f"policy version {answer.get('version')}: reloading failed on "
                                  + ", ".join(f"{u.get('url')}: {u.get('detail')}" for u in failed),
                                  details={"upstreams": ups})
    return answer


def _tensorize(answer: Json, tensors: str | None, layout: str, options: dict[str, Any] | None) -> Json:
    """Client-side tensors (``steplake.batches.tensorize``) added as ``answer["tensors"]``."""
    if tensors is None:
        return answer
    from .batches import tensorize

    answer["tensors"] = tensorize(answer, layout=layout, backend=tensors, **(options or {})) \
        if answer.get("groups") else None
    return answer


class _Endpoints(Generic[R]):
    """The API, written once. ``_call`` does the HTTP work (sync or async)."""

    def _call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
              none_on_404: bool = False, after: Callable[[Any], Any] | None = None) -> R:
        raise NotImplementedError

    # trajectories and groups
    def create_trajectory(self, trajectory_id: str | None = None, *, group_id: str | None = None,
                          group_size: int | None = None, channel: str | None = None,
                          metadata: dict[str, Any] | None = None, session_key: bool = False) -> R:
        """Open a trajectory; the answer holds its ids and base URLs. ``session_key=True`` also mints an
        API key bound to it, answered once as ``api_key`` (with its ``key_id``): an agent given
        ``base_url=f"{server}/v1"`` and ``api_key`` lands every gateway call in this trajectory."""
        body = _clean({"trajectory_id": trajectory_id, "group_id": group_id, "group_size": group_size,
                       "channel": channel, "metadata": metadata, "session_key": True if session_key else None})
        return self._call("POST", f"{API}/trajectories", body=body)

    def create_group(self, n: int, *, group_id: str | None = None, channel: str | None = None,
                     metadata: dict[str, Any] | None = None) -> R:
        body = _clean({"n": n, "group_id": group_id, "channel": channel, "metadata": metadata})
        return self._call("POST", f"{API}/groups", body=body)

    def complete(self, trajectory_id: str, reward: float | None = None, *,
                 metadata: dict[str, Any] | None = None) -> R:
        body = _clean({"reward": reward, "metadata": metadata})
        return self._call("POST", f"{API}/trajectories/{trajectory_id}/complete", body=body)

    def get_trajectory(self, trajectory_id: str, *, steps: bool = True) -> R:
        return self._call("GET", f"{API}/trajectories/{trajectory_id}", params={"steps": steps}, none_on_404=True)

    def list_trajectories(self, *, cursor: str | None = None, limit: int = 100, **filters: Any) -> R:
        return self._call("GET", f"{API}/trajectories", params={"cursor": cursor, "limit": limit, **filters})

    def delete_trajectory(self, trajectory_id: str) -> R:
        return self._call("DELETE", f"{API}/trajectories/{trajectory_id}")

    def get_group(self, group_id: str) -> R:
        return self._call("GET", f"{API}/groups/{group_id}", none_on_404=True)

    def list_groups(self, *, cursor: str | None = None, limit: int = 100, **filters: Any) -> R:
        return self._call("GET", f"{API}/groups", params={"cursor": cursor, "limit": limit, **filters})

    # steps
    def submit_steps(self, steps: Sequence[dict[str, Any] | BaseModel]) -> R:
        """Durable on return (CONTRACT §3). ``steps``: dicts shaped as a Step, or ``records.Step``."""
        return self._call("POST", f"{API}/steps", body={"steps": [_step_json(s) for s in steps]})

    def get_step(self, step_id: str) -> R:
        return self._call("GET", f"{API}/steps/{step_id}", none_on_404=True)

    def list_steps(self, *, cursor: str | None = None, limit: int = 100, fields: str = "full",
                   **filters: Any) -> R:
        params = {"cursor": cursor, "limit": limit, "fields": fields, **filters}
        return self._call("GET", f"{API}/steps", params=params)

    # rewards, curation, feedback
    def add_reward(self, name: str, value: float, *, trajectory_id: str | None = None, step_id: str | None = None,
                   version: str | None = None, details: dict[str, Any] | None = None) -> R:
        body = _clean({"trajectory_id": trajectory_id, "step_id": step_id, "name": name, "value": value,
                       "version": version, "details": details})
        return self._call("POST", f"{API}/rewards", body=body)

    def curate(self, *, step_ids: Sequence[str] | None = None, trajectory_ids: Sequence[str] | None = None,
               filter: dict[str, Any] | None = None, quality: str | None = None, trainable: bool | None = None,
               tags_add: Sequence[str] | None = None, tags_remove: Sequence[str] | None = None,
               note: str | None = None, reviewer: str | None = None) -> R:
        body = _clean({"step_ids": step_ids and list(step_ids),
                       "trajectory_ids": trajectory_ids and list(trajectory_ids), "filter": filter,
                       "quality": quality, "trainable": trainable, "tags_add": tags_add and list(tags_add),
                       "tags_remove": tags_remove and list(tags_remove), "note": note, "reviewer": reviewer})
        return self._call("POST", f"{API}/curation", body=body)

    def curation_history(self, target_id: str) -> R:
        return self._call("GET", f"{API}/curation/history", params={"target_id": target_id},
                          after=lambda a: a["items"])

    def add_feedback(self, kind: str, value: Any, *, step_id: str | None = None, trajectory_id: str | None = None,
                     comment: str | None = None, author: str | None = None) -> R:
        body = _clean({"step_id": step_id, "trajectory_id": trajectory_id, "kind": kind, "value": value,
                       "comment": comment, "author": author})
        return self._call("POST", f"{API}/feedback", body=body)

    # batches and policy
    def fetch_batch(self, channel: str = "train", groups: int = 1, *, recipe: str | None = None,
                    layout: str = "step", filters: dict[str, Any] | None = None, wait_seconds: float = 0,
                    lease_seconds: float = 300, dry_run: bool = False, tensors: str | None = None,
                    tensor_options: dict[str, Any] | None = None) -> R:
        """CONTRACT §4. ``tensors="numpy"|"torch"`` adds ``answer["tensors"]`` built client-side by
        ``steplake.batches.tensorize`` (``tensor_options``: mode, pad_token_id, max_length, truncation)."""
        body = _clean({"channel": channel, "groups": groups, "recipe": recipe, "layout": layout,
                       "filters": filters, "wait_seconds": wait_seconds, "lease_seconds": lease_seconds,
                       "dry_run": dry_run})
        return self._call("POST", f"{API}/batches", body=body,
                          after=lambda a: _tensorize(a, tensors, layout, tensor_options))

    def ack(self, batch_id: str) -> R:
        return self._call("POST", f"{API}/batches/{batch_id}/ack")

    def get_batch(self, batch_id: str) -> R:
        return self._call("GET", f"{API}/batches/{batch_id}", none_on_404=True)

    def publish_policy(self, version: int, weights_path: str | None = None, note: str | None = None) -> R:
        """Record a policy version; with ``weights_path`` the server first reloads every reloadable upstream
        and records only if all succeeded. Raises on any error: ``ConflictError`` (409) for a version not
        above the current one, ``ValidationError`` (422) for a path outside the server's ``--weights-root``,
        ``PolicyReloadError`` (502, ``details["upstreams"]``) when a reload failed and nothing was recorded."""
        body = _clean({"version": version, "weights_path": weights_path, "note": note})
        return self._call("POST", f"{API}/policy", body=body, after=_check_reloads)

    def get_policy(self) -> R:
        return self._call("GET", f"{API}/policy")

    # exports and reward runs
    def create_export(self, format: str, *, channel: str | None = None, filters: dict[str, Any] | None = None,
                      recipe: str | None = None, batch_id: str | None = None, from_manifest: str | None = None,
                      name: str | None = None, include_open: bool = False, allow_changes: bool = False) -> R:
        """Write an export on the server (``POST /exports``); ``from_manifest`` is an earlier export id."""
        body = _clean({"format": format, "channel": channel, "filters": filters, "recipe": recipe,
                       "batch_id": batch_id, "from_manifest": from_manifest, "name": name,
                       "include_open": include_open or None, "allow_changes": allow_changes or None})
        return self._call("POST", f"{API}/exports", body=body)

    def list_exports(self, *, cursor: str | None = None, limit: int = 100) -> R:
        return self._call("GET", f"{API}/exports", params={"cursor": cursor, "limit": limit})

    def get_export(self, export_id: str) -> R:
        return self._call("GET", f"{API}/exports/{export_id}", none_on_404=True)

    def run_rewards(self, trajectory_ids: Sequence[str] | None = None, *, filter: dict[str, Any] | None = None,
                    version: str | None = None) -> R:
        """Score trajectories now with the server's reward functions; old versions are kept."""
        body = _clean({"trajectory_ids": None if trajectory_ids is None else list(trajectory_ids),
                       "filter": filter, "version": version})
        return self._call("POST", f"{API}/rewards/run", body=body)

    # white-box generation, stats, keys
    def generate(self, prompt_ids: Sequence[int], sampling: dict[str, Any] | None = None, *,
                 trajectory_id: str | None = None, group_id: str | None = None,
                 metadata: dict[str, Any] | None = None) -> R:
        body = _clean({"prompt_ids": list(prompt_ids), "sampling": sampling, "trajectory_id": trajectory_id,
                       "group_id": group_id, "metadata": metadata})
        return self._call("POST", f"{API}/generate", body=body)

    def stats(self) -> R:
        return self._call("GET", f"{API}/stats")

    def create_key(self, scope: str, name: str | None = None, binding: dict[str, Any] | None = None) -> R:
        """``binding`` ({trajectory_id, group_id?, channel?, metadata?}, scope "agent") makes a session key."""
        return self._call("POST", f"{API}/keys", body=_clean({"scope": scope, "name": name, "binding": binding}))

    def list_keys(self) -> R:
        return self._call("GET", f"{API}/keys", after=lambda a: a["items"])

    def revoke_key(self, key_id: str) -> R:
        return self._call("DELETE", f"{API}/keys/{key_id}")

    def audit(self, *, action: str | None = None, actor: str | None = None, since: float | None = None,
              until: float | None = None, cursor: str | None = None, limit: int = 100) -> R:
        """One page of the audit log, newest first (``GET /audit``, admin): ``{items, next_cursor}``."""
        return self._call("GET", f"{API}/audit", params={"action": action, "actor": actor, "since": since,
                                                         "until": until, "cursor": cursor, "limit": limit})


def _headers(api_key: str | None) -> dict[str, str]:
    h = {"user-agent": "steplake-client"}
    if api_key:
        h["authorization"] = f"Bearer {api_key}"
    return h


def _encode(body: Any) -> tuple[bytes | None, dict[str, str]]:
    if body is None:
        return None, {}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), {"content-type": "application/json"}


def _finish(resp: httpx.Response, none_on_404: bool, after: Callable[[Any], Any] | None) -> Any:
    if resp.status_code == 404 and none_on_404:
        return None
    if resp.status_code >= 400:
        raise error_from_response(resp.status_code, resp.content)
    data = orjson.loads(resp.content) if resp.content else None
    return after(data) if after is not None else data


def _unreachable(base_url: str, e: Exception) -> E.ServiceUnavailableError:
    return E.ServiceUnavailableError(f"cannot reach steplake at {base_url}: {e or type(e).__name__}",
                                     code="connection_error")


def _params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


def _check_dest(dest: Path, overwrite: bool) -> Path:
    if dest.exists() and not overwrite:
        raise E.BadRequestError(f"{dest} already exists (pass overwrite=True to replace it)", code="exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(f".{dest.name}.part")


def _unzip_into(zip_path: Path, dest: Path) -> None:
    """Extract an hf export's zip (one top folder) into ``dest``, refusing paths that leave it."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            parts = PurePosixPath(info.filename).parts[1:]
            if info.is_dir() or not parts:
                continue
            if any(p in ("", ".", "..") or "\\" in p for p in parts) or info.filename.startswith("/"):
                raise E.BadRequestError(f"unsafe path in export archive: {info.filename!r}")
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


def _place_download(part: Path, dest: Path, content_type: str) -> Path:
    """Move a finished download into place: a file as is, a zip (hf export) extracted into a folder."""
    try:
        if content_type.startswith("application/zip"):
            if dest.is_dir():
                shutil.rmtree(dest)
            _unzip_into(part, dest)
        else:
            part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


class SSEParser:
    """Incremental ``text/event-stream`` parser yielding ``{"id", "kind", "data"}`` dicts."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def feed(self, line: str) -> Json | None:
        if line == "":
            if not self._data:
                self._fields.clear()
                return None
            raw = "\n".join(self._data)
            event = {"id": int(self._fields["id"]) if self._fields.get("id", "").isdigit() else None,
                     "kind": self._fields.get("event", "message"), "data": orjson.loads(raw)}
            self._fields.clear()
            self._data = []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name in ("id", "event"):
            self._fields[name] = value
        return None


def _event_params(last_event_id: int | None, kinds: Sequence[str] | None, heartbeat: float | None
                  ) -> dict[str, Any]:
    return _clean({"last_event_id": last_event_id, "kinds": ",".join(kinds) if kinds else None,
                   "heartbeat": heartbeat})


class Client(_Endpoints[Any]):
    """Synchronous client. Use as a context manager or call ``close()``."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=timeout,
                                  transport=transport)

    def _call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
              none_on_404: bool = False, after: Callable[[Any], Any] | None = None) -> Any:
        content, headers = _encode(body)
        try:
            resp = self._http.request(method, path, content=content, headers=headers, params=_params(params))
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        return _finish(resp, none_on_404, after)

    def iter_trajectories(self, **filters: Any) -> Iterator[Json]:
        """Every trajectory matching ``filters``, following ``next_cursor`` page by page."""
        yield from self._iterate(self.list_trajectories, filters)

    def iter_steps(self, **filters: Any) -> Iterator[Json]:
        yield from self._iterate(self.list_steps, filters)

    def iter_batches(self, *, max_batches: int | None = None, idle_timeout: float | None = 60.0,
                     wait_seconds: float = 30.0, **fetch: Any) -> Iterator[Json]:
        """Batches for a training loop: each one is acked when the loop asks for the next, i.e. after its
        optimizer step; if the loop body raises, it is not acked and is served again after its lease.
        Stops after ``max_batches``, or when no group became ready for ``idle_timeout`` seconds (None:
        wait forever). ``fetch`` takes the arguments of :meth:`fetch_batch` (recipe, groups, tensors...)."""
        served, idle_since = 0, time.monotonic()
        while max_batches is None or served < max_batches:
            batch = self.fetch_batch(wait_seconds=wait_seconds, **fetch)
            if not batch["groups"]:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                continue
            yield batch
            if batch.get("batch_id"):
                self.ack(batch["batch_id"])
            served, idle_since = served + 1, time.monotonic()

    @staticmethod
    def _iterate(list_fn: Callable[..., Any], filters: dict[str, Any]) -> Iterator[Json]:
        cursor = filters.pop("cursor", None)
        while True:
            page = list_fn(cursor=cursor, **filters)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def events(self, last_event_id: int | None = None, kinds: Sequence[str] | None = None, *,
               heartbeat: float | None = None, reconnect: bool = True) -> Iterator[Json]:
        """Server-Sent Events as ``{"id", "kind", "data"}``; reconnects after ``last_event_id`` on drops."""
        while True:
            try:
                params = _event_params(last_event_id, kinds, heartbeat)
                with self._http.stream("GET", f"{API}/events", params=params,
                                       timeout=httpx.Timeout(10.0, read=None)) as resp:
                    if resp.status_code >= 400:
                        raise error_from_response(resp.status_code, resp.read())
                    parser = SSEParser()
                    for line in resp.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            last_event_id = event["id"] if event["id"] is not None else last_event_id
                            yield event
            except httpx.TransportError as e:
                if not reconnect:
                    raise _unreachable(self.base_url, e) from e
                time.sleep(1.0)
                continue
            if not reconnect:
                return

    def export(self, format: str, path: str | Path | None = None, *, overwrite: bool = False,
               **options: Any) -> Json:
        """Write an export on the server (``create_export`` options) and, with ``path``, download it there
        (an ``hf`` export becomes a dataset folder). The answer gains ``local_path``."""
        answer: Json = self.create_export(format, **options)
        if path is not None:
            answer["local_path"] = str(self.download_export(answer["export_id"], path, overwrite=overwrite))
        return answer

    def download_export(self, export_id: str, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save an export's file at ``path`` (an ``hf`` export: extracted into the folder ``path``)."""
        dest = Path(path)
        part = _check_dest(dest, overwrite)
        try:
            with self._http.stream("GET", f"{API}/exports/{export_id}/download") as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.status_code, resp.read())
                with part.open("wb") as f:
                    for chunk in resp.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as e:
            part.unlink(missing_ok=True)
            raise _unreachable(self.base_url, e) from e
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return _place_download(part, dest, resp.headers.get("content-type", ""))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Endpoints[Awaitable[Any]]):
    """Asyncio client: the same methods as ``Client``, each returning an awaitable."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def _request(self, method: str, path: str, body: Any, params: dict[str, Any] | None,
                       none_on_404: bool, after: Callable[[Any], Any] | None) -> Any:
        content, headers = _encode(body)
        try:
            resp = await self._http.request(method, path, content=content, headers=headers,
                                            params=_params(params))
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        return _finish(resp, none_on_404, after)

    def _call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
              none_on_404: bool = False, after: Callable[[Any], Any] | None = None) -> Awaitable[Any]:
        return self._request(method, path, body, params, none_on_404, after)

    async def iter_batches(self, *, max_batches: int | None = None, idle_timeout: float | None = 60.0,
                           wait_seconds: float = 30.0, **fetch: Any) -> AsyncIterator[Json]:
        """Async twin of :meth:`Client.iter_batches` (ack after the loop body, none when it raises)."""
        served, idle_since = 0, time.monotonic()
        while max_batches is None or served < max_batches:
            batch = await self.fetch_batch(wait_seconds=wait_seconds, **fetch)
            if not batch["groups"]:
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                continue
            yield batch
            if batch.get("batch_id"):
                await self.ack(batch["batch_id"])
            served, idle_since = served + 1, time.monotonic()

    async def iter_trajectories(self, **filters: Any) -> AsyncIterator[Json]:
        async for item in self._iterate(self.list_trajectories, filters):
            yield item

    async def iter_steps(self, **filters: Any) -> AsyncIterator[Json]:
        async for item in self._iterate(self.list_steps, filters):
            yield item

    @staticmethod
    async def _iterate(list_fn: Callable[..., Awaitable[Any]], filters: dict[str, Any]) -> AsyncIterator[Json]:
        cursor = filters.pop("cursor", None)
        while True:
            page = await list_fn(cursor=cursor, **filters)
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if not cursor:
                return

    async def events(self, last_event_id: int | None = None, kinds: Sequence[str] | None = None, *,
                     heartbeat: float | None = None, reconnect: bool = True) -> AsyncIterator[Json]:
        import asyncio

        while True:
            try:
                params = _event_params(last_event_id, kinds, heartbeat)
                async with self._http.stream("GET", f"{API}/events", params=params,
                                             timeout=httpx.Timeout(10.0, read=None)) as resp:
                    if resp.status_code >= 400:
                        raise error_from_response(resp.status_code, await resp.aread())
                    parser = SSEParser()
                    async for line in resp.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            last_event_id = event["id"] if event["id"] is not None else last_event_id
                            yield event
            except httpx.TransportError as e:
                if not reconnect:
                    raise _unreachable(self.base_url, e) from e
                await asyncio.sleep(1.0)
                continue
            if not reconnect:
                return

    async def export(self, format: str, path: str | Path | None = None, *, overwrite: bool = False,
                     **options: Any) -> Json:
        """As ``Client.export``."""
        answer: Json = await self.create_export(format, **options)
        if path is not None:
            answer["local_path"] = str(await self.download_export(answer["export_id"], path, overwrite=overwrite))
        return answer

    async def download_export(self, export_id: str, path: str | Path, *, overwrite: bool = False) -> Path:
        """As ``Client.download_export``."""
        dest = Path(path)
        part = _check_dest(dest, overwrite)
        try:
            async with self._http.stream("GET", f"{API}/exports/{export_id}/download") as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.status_code, await resp.aread())
                with part.open("wb") as f:
                    async for chunk in resp.aiter_bytes():
                        f.write(chunk)
        except httpx.TransportError as e:
            part.unlink(missing_ok=True)
            raise _unreachable(self.base_url, e) from e
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return _place_download(part, dest, resp.headers.get("content-type", ""))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["Client", "AsyncClient", "error_from_response", "SSEParser", "DEFAULT_URL"]
