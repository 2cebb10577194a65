"""``/api/v1/exports``: write an export on the server, list them, read a manifest, download the file.

Each pool's exports live in a folder of their own, never at a client-supplied path and never shared with
another pool (:func:`exports_root`): ``<db dir>/<db file name>.exports/`` for a SQLite pool (``pool.db`` →
``pool.db.exports/``), ``./steplake-exports/<host>_<port>_<database>_<schema>/`` (under the server's working
directory) for PostgreSQL. Each export is a sub-folder named by its ``export_id`` (the request's ``name``,
validated, or a generated id) holding the file (``<id>.jsonl`` / ``<id>.parquet`` / the ``<id>/`` dataset
folder), its manifest and sidecars. The ``hf`` download is a zip of the dataset folder, built on first
download. The work runs in a worker thread (:func:`steplake.exports.export_pool`).

Answers name files relative to the export (``path``: the file's name); no answer or served manifest tells
where the server keeps them, and error messages have the folder removed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..batches.manifest import manifest_path_for
from ..config import Settings
from ..errors import ConflictError, NotFoundError, SteplakeError
from ..exports import export_pool
from ..filters import parse_cursor
from ..records import Metadata, NoNul, Recipe
from ..store.base import Store
from .common import documented_body, pool_of, settings_of
from .params import Cursor, Limit
from .responses import ok, read_model

router = APIRouter(prefix="/api/v1", tags=["exports"])

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
Name = Annotated[str, Field(pattern=NAME_RE.pattern, description="Letters, digits, '_', '.', '-' (≤ 100).")]
EXTENSIONS = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": ""}


class ExportIn(BaseModel):
    """``POST /api/v1/exports``. Select by ``filters`` (+ ``channel``), by ``batch_id``, or reproduce
    an earlier export (``from_manifest``: its export id)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "parquet", "hf"]
    channel: Annotated[str, Field(min_length=1, max_length=128), NoNul] | None = None
    filters: Metadata | None = None
    recipe: Recipe | None = None
    batch_id: Annotated[str, Field(min_length=1, max_length=128), NoNul] | None = None
    from_manifest: Name | None = None
    name: Name | None = None
    include_open: bool = False
    allow_changes: bool = False


def _safe_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "-"


def exports_root(settings: Settings, store: Any = None) -> Path:
    """This pool's exports folder: ``<db dir>/<db file name>.exports`` for SQLite,
    ``./steplake-exports/<host>_<port>_<database>_<schema>`` for PostgreSQL (``store`` wins over
    ``settings.db`` when given: its path, or its URL and schema; a store or the pool's ``store_address``)."""
    db = str(getattr(store, "url", None) or getattr(store, "path", None) or settings.db)
    if db.startswith(("postgresql://", "postgres://")):
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(db)
        query = dict(parse_qsl(parts.query))
        schema = getattr(store, "schema", None) or query.get("schema") or "public"
        host = parts.hostname or query.get("host") or "localhost"
        port = str(parts.port or query.get("port") or 5432)
        database = parts.path.lstrip("/") or query.get("dbname") or parts.username or "postgres"
        key = "_".join(_safe_part(x) for x in (host, port, database, schema))
        return Path.cwd() / "steplake-exports" / key
    path = Path(db[len("sqlite:///"):] if db.startswith("sqlite:///") else db).resolve()
    return path.parent / f"{path.name}.exports"


def _root_of(request: Request) -> Path:
    return exports_root(settings_of(request), pool_of(request).store_address)


def _scrub(err: SteplakeError, root: Path) -> None:
    """Remove the server's folder from an error message (answers never tell where exports live)."""
    for prefix in (f"{root}{os.sep}", str(root)):
        err.message = err.message.replace(prefix, "")
    err.args = (err.message,)


def _valid_id(export_id: str) -> bool:
    return NAME_RE.fullmatch(export_id) is not None  # no separators, no leading '.': stays in the folder


def _file_of(root: Path, export_id: str, fmt: str) -> Path:
    return root / export_id / f"{export_id}{EXTENSIONS[fmt]}"


def _public(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest as answered: file names only (a manifest written by an older steplake held absolute paths)."""
    if isinstance(manifest.get("path"), str):
        manifest["path"] = Path(manifest["path"]).name
    selection = manifest.get("selection")
    if isinstance(selection, dict) and isinstance(selection.get("source_manifest"), str):
        source = selection["source_manifest"]
        selection["source_manifest"] = Path(source).name if os.path.isabs(source) else source
    return manifest


def _read_entry(root: Path, export_id: str) -> dict[str, Any] | None:
    """The answer for one export, or None when ``export_id`` names no finished export."""
    if not _valid_id(export_id):
        return None
    for fmt in EXTENSIONS:
        mp = manifest_path_for(_file_of(root, export_id, fmt), fmt)
        if mp.is_file():
            manifest = _public(orjson.loads(mp.read_bytes()))
            return {"export_id": export_id, "format": fmt, "path": manifest.get("path"), "manifest": manifest,
                    "download_url": f"/api/v1/exports/{export_id}/download"}
    return None


def _new_id() -> str:
    return time.strftime("exp-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _run_export(store: Store, root: Path, body: ExportIn) -> dict[str, Any]:
    export_id = body.name or _new_id()
    source = None
    if body.from_manifest is not None:
        src = _read_entry(root, body.from_manifest)
        if src is None:
            raise NotFoundError(f"export {body.from_manifest!r} not found", code="export_not_found")
        source = manifest_path_for(_file_of(root, body.from_manifest, src["format"]), src["format"])
    root.mkdir(parents=True, exist_ok=True)
    folder = root / export_id
    try:
        folder.mkdir()
    except FileExistsError:
        raise ConflictError(f"export {export_id!r} already exists", code="export_exists") from None
    try:
        export_pool(store, path=_file_of(root, export_id, body.format), format=body.format,
                    channel=body.channel, filters=body.filters, recipe=body.recipe, batch_id=body.batch_id,
                    from_manifest=source, include_open=body.include_open, allow_changes=body.allow_changes)
    except BaseException as e:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, SteplakeError):
            _scrub(e, root)
        raise
    entry = _read_entry(root, export_id)
    assert entry is not None
    return entry


@router.post("/exports", status_code=201, openapi_extra=documented_body(ExportIn),
             summary="Export steps (jsonl / parquet / hf) with a manifest; from_manifest reproduces one")
async def post_export(request: Request) -> Response:
    body = await read_model(request, ExportIn)
    return ok(await pool_of(request).run_job(_run_export, _root_of(request), body), 201)


def _list(root: Path) -> list[dict[str, Any]]:
    if not root.is_dir():
        return []
    entries = [e for d in root.iterdir() if d.is_dir() and (e := _read_entry(root, d.name)) is not None]
    return sorted(entries, key=lambda e: (-float(e["manifest"].get("created_at") or 0), e["export_id"]))


@router.get("/exports", summary="Exports on this server, newest first, with their manifests")
async def list_exports(request: Request, cursor: Cursor = None, limit: Limit = 100) -> Response:
    entries = await asyncio.to_thread(_list, _root_of(request))
    start = max(0, parse_cursor(cursor)) if cursor else 0  # "¹".isdigit() is True: parse, 422 if not an int
    page = entries[start:start + limit]
    more = start + limit < len(entries)
    return ok({"items": page, "next_cursor": str(start + limit) if more else None})


async def _entry(request: Request, export_id: str) -> tuple[Path, dict[str, Any]]:
    root = _root_of(request)
    entry = await asyncio.to_thread(_read_entry, root, export_id)
    if entry is None:
        raise NotFoundError(f"export {export_id!r} not found", code="export_not_found")
    return root, entry


@router.get("/exports/{export_id}", summary="One export and its manifest")
async def get_export(request: Request, export_id: str) -> Response:
    return ok((await _entry(request, export_id))[1])


def _zip_folder(folder: Path) -> Path:
    target = folder.with_name(folder.name + ".zip")
    if target.is_file():
        return target
    tmp = folder.with_name(f".{folder.name}.zip.tmp-{secrets.token_hex(4)}")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, Path(folder.name) / p.relative_to(folder))
    tmp.replace(target)
    return target


@router.get("/exports/{export_id}/download",
            summary="The export's file (an hf dataset folder comes as a .zip)")
async def download_export(request: Request, export_id: str) -> Response:
    root, entry = await _entry(request, export_id)
    path = _file_of(root, export_id, entry["format"])
    if entry["format"] == "hf":
        path = await asyncio.to_thread(_zip_folder, path)
        return FileResponse(path, media_type="application/zip", filename=path.name)
    media = "application/x-ndjson" if entry["format"] == "jsonl" else "application/vnd.apache.parquet"
    return FileResponse(path, media_type=media, filename=path.name)


__all__ = ["router", "ExportIn", "exports_root"]
