"""Export manifests: what an export contains and how to prove a later rebuild is identical.

A manifest is a JSON file beside the export (``<file>.manifest.json``, or ``steplake_manifest.json``
inside a Hugging Face dataset folder) plus a sidecar listing every exported step id with its row digest
(``<file>.stepids``: ``step_id<TAB>sha256`` lines sorted by step id), so the exact selection can be
re-read and re-exported later.

The manifest names files relative to itself, never by an absolute path: ``path`` is the export's file
name (an ``hf`` export: its folder's name; the manifest sits inside it) and ``files`` the names the export
holds, so a manifest can be moved with its export or served over HTTP without telling where the server
keeps it. :func:`read_manifest` gives ``path`` back as the location beside the manifest it read.

Hashes (all sha256, hex):

- row digest (:func:`batch_digests`): computed from the row as encoded in the export's Arrow schema, so
  it does not depend on the file format or on row-group layout. sha256 over, in this order: every string
  column (plain and JSON text) in schema order as ``<byte length>:<utf-8 bytes>`` (``-1:`` for null);
  the orjson array of the other scalar columns and ``tags`` in schema order; then for each
  ``list<int>``/``list<float>`` column in schema order its length as 8 bytes little-endian (-1 for null)
  followed by its raw little-endian values (int32 ids, float64 logprobs).
- ``content_hash``: sha256 over the ``step_id\t<row digest>\n`` lines sorted by (step id, digest), so it
  does not depend on row order either.
- ``step_ids_hash``: sha256 over the sorted distinct ``step_id\n`` lines.
- ``curation_hash``: sha256 over sorted ``step_id\t[quality, trainable, sorted tags]\n`` lines.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from ..types import Json

MANIFEST_VERSION = 1
HF_MANIFEST_NAME = "steplake_manifest.json"


def steplake_version() -> str:
    try:
        return importlib.metadata.version("steplake")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


_NULL_LEN = struct.pack("<q", -1)
_PACK_LEN = struct.Struct("<q").pack


def _numeric_list(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
    )


def _framed_strings(columns: list[pa.Array], n: int) -> list[bytes]:
    """Per row, every string column as ``<byte length>:<bytes>`` (``-1:`` for null), concatenated —
    built column-wise by Arrow compute, so long JSON texts cost no Python-level work."""
    if not columns:
        return [b""] * n
    frames = []
    for col in columns:
        length = pc.fill_null(pc.cast(pc.binary_length(col), pa.string()), "-1")
        frames.append(pc.binary_join_element_wise(length, pc.fill_null(col, ""), ":"))
    joined = pc.binary_join_element_wise(*frames, "")
    return joined.cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]


def _list_parts(arr: pa.Array) -> tuple[list[int], memoryview, int, list[bool] | None]:
    offsets = arr.offsets.to_pylist()
    values = arr.values.to_numpy(zero_copy_only=False)
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    valid = arr.is_valid().to_pylist() if arr.null_count else None
    return offsets, memoryview(values.tobytes()), values.itemsize, valid


def batch_digests(batch: pa.RecordBatch) -> list[str]:
    """One digest per row of ``batch`` (see the module docstring for the exact definition)."""
    kinds = [
        "list" if _numeric_list(f.type) else "str" if pa.types.is_string(f.type) else "other"
        for f in batch.schema
    ]
    strings = _framed_strings([batch.column(i) for i, k in enumerate(kinds) if k == "str"], batch.num_rows)
    others = [batch.column(i).to_pylist() for i, k in enumerate(kinds) if k == "other"]
    lists = [_list_parts(batch.column(i)) for i, k in enumerate(kinds) if k == "list"]
    out = []
    for r in range(batch.num_rows):
        h = hashlib.sha256(strings[r])
        h.update(orjson.dumps([col[r] for col in others]))
        for offsets, values, size, valid in lists:
            if valid is not None and not valid[r]:
                h.update(_NULL_LEN)
                continue
            start, end = offsets[r], offsets[r + 1]
            h.update(_PACK_LEN(end - start))
            h.update(values[start * size : end * size])
        out.append(h.hexdigest())
    return out


def _hash_lines(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def hash_step_ids(step_ids: Iterable[str]) -> str:
    return _hash_lines(sorted(set(step_ids)))


def hash_content(pairs: Iterable[tuple[str, str]]) -> str:
    """``content_hash`` from (step_id, row digest) pairs in any order."""
    return _hash_lines(f"{sid}\t{digest}" for sid, digest in sorted(pairs))


class PolicyVersions(BaseModel):
    min: int | None = None
    max: int | None = None
    values: list[int] = Field(default_factory=list)


class ExportCounts(BaseModel):
    steps: int = 0
    trajectories: int = 0
    groups: int = 0
    prompt_tokens: int = 0
    response_tokens: int = 0
    tokens: int = 0


class Manifest(BaseModel):
    """Provenance of one export; ``step_ids``/``row_digests`` live in the sidecar, not the JSON."""

    manifest_version: int = MANIFEST_VERSION
    created_at: float
    steplake_version: str
    format: str
    path: str
    files: list[str] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    filters: Json = Field(default_factory=dict)
    recipe: str | None = None
    selection: Json = Field(default_factory=dict)
    step_ids_hash: str
    step_ids_file: str | None = None
    curation_hash: str
    reward_versions: dict[str, list[str]] = Field(default_factory=dict)
    policy_versions: PolicyVersions = Field(default_factory=PolicyVersions)
    counts: ExportCounts = Field(default_factory=ExportCounts)
    content_hash: str
    step_ids: list[str] = Field(default_factory=list, exclude=True)
    row_digests: list[str] = Field(default_factory=list, exclude=True)


def _tokens(lists: pa.Array) -> int:
    total = pc.sum(pc.list_value_length(lists)).as_py()
    return int(total or 0)


class ManifestBuilder:
    """Accumulates what a manifest needs while record batches stream by (ids and digests, not rows).

    Expects batches in the export schema (``step_id``, ``trajectory_id``, ``group_id``, ``prompt_ids``,
    ``response_ids``, ``policy_version``, ``reward_components`` as JSON text, ``quality``, ``trainable``,
    ``tags``)."""

    def __init__(self) -> None:
        self._pairs: list[tuple[str, str]] = []
        self._curation: list[str] = []
        self._trajectories: set[str] = set()
        self._groups: set[str] = set()
        self._policies: set[int] = set()
        self._rewards: dict[str, set[str]] = {}
        self._components_seen: set[str] = set()
        self._counts = {"steps": 0, "prompt_tokens": 0, "response_tokens": 0}

    @property
    def steps(self) -> int:
        return self._counts["steps"]

    def add_batch(self, batch: pa.RecordBatch, digests: list[str]) -> None:
        """Record a batch of export rows with their digests (:func:`batch_digests`)."""
        col = batch.column
        step_ids = col("step_id").to_pylist()
        self._pairs.extend(zip(step_ids, digests, strict=True))
        for sid, quality, trainable, tags in zip(
            step_ids,
            col("quality").to_pylist(),
            col("trainable").to_pylist(),
            col("tags").to_pylist(),
            strict=True,
        ):
            self._curation.append(f"{sid}\t{orjson.dumps([quality, trainable, sorted(tags or [])]).decode()}")
        self._trajectories.update(pc.unique(col("trajectory_id")).to_pylist())
        self._groups.update(g for g in pc.unique(col("group_id")).to_pylist() if g is not None)
        self._policies.update(v for v in pc.unique(col("policy_version")).to_pylist() if v is not None)
        for text in pc.unique(col("reward_components")).to_pylist():
            if text is not None and text not in self._components_seen:
                self._components_seen.add(text)
                self._add_rewards(orjson.loads(text))
        self._counts["steps"] += batch.num_rows
        self._counts["prompt_tokens"] += _tokens(col("prompt_ids"))
        self._counts["response_tokens"] += _tokens(col("response_ids"))

    def _add_rewards(self, components: Any) -> None:
        if not isinstance(components, Mapping):
            return
        for name, comp in components.items():
            version = comp.get("version") if isinstance(comp, Mapping) else None
            self._rewards.setdefault(str(name), set()).add(str(version) if version is not None else "?")

    def build(
        self, *, format: str, path: str, files: list[str], info: Mapping[str, Any] | None = None
    ) -> Manifest:
        info = dict(info or {})
        pairs = sorted(self._pairs)
        counts = ExportCounts(
            **self._counts,
            tokens=self._counts["prompt_tokens"] + self._counts["response_tokens"],
            trajectories=len(self._trajectories),
            groups=len(self._groups),
        )
        policies = sorted(self._policies)
        return Manifest(
            created_at=float(info.pop("created_at", time.time())),
            steplake_version=steplake_version(),
            format=format,
            path=path,
            files=files,
            columns=list(info.pop("columns", [])),
            filters=dict(info.pop("filters", None) or {}),
            recipe=info.pop("recipe", None),
            selection=info,
            step_ids_hash=hash_step_ids(sid for sid, _ in pairs),
            curation_hash=_hash_lines(sorted(self._curation)),
            reward_versions={k: sorted(v) for k, v in sorted(self._rewards.items())},
            policy_versions=PolicyVersions(
                min=policies[0] if policies else None, max=policies[-1] if policies else None, values=policies
            ),
            counts=counts,
            content_hash=hash_content(pairs),
            step_ids=[sid for sid, _ in pairs],
            row_digests=[digest for _, digest in pairs],
        )


def manifest_path_for(path: str | os.PathLike[str], format: str) -> Path:
    """Where an export's manifest goes: inside an ``hf`` folder, else ``<file>.manifest.json``."""
    p = Path(path)
    return p / HF_MANIFEST_NAME if format == "hf" else p.with_name(p.name + ".manifest.json")


def _sidecar_for(manifest_path: Path) -> Path:
    name = manifest_path.name.removesuffix(".json").removesuffix(".manifest")
    return manifest_path.with_name(name + ".stepids")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write the manifest JSON and its step-id sidecar; returns the manifest path."""
    target = Path(path)
    sidecar = _sidecar_for(target)
    lines = "".join(f"{sid}\t{d}\n" for sid, d in zip(manifest.step_ids, manifest.row_digests, strict=True))
    _atomic_write(sidecar, lines.encode())
    manifest.step_ids_file = sidecar.name
    doc = manifest.model_dump(mode="json")
    doc["path"] = Path(manifest.path).name  # relative: the file beside the manifest (hf: the folder holding it)
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    _atomic_write(target, body + b"\n")
    return target


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest (a manifest file, or an ``hf`` export folder) with its step ids; ``path`` is the
    export's location beside the manifest.

    Raises ``ValueError`` if the sidecar does not match ``step_ids_hash``."""
    p = Path(path)
    if p.is_dir():
        p = p / HF_MANIFEST_NAME
    manifest = Manifest.model_validate(orjson.loads(p.read_bytes()))
    name = Path(manifest.path).name  # older manifests hold an absolute path: only its name counts
    manifest.path = str(p.parent if manifest.format == "hf" else p.parent / name)
    if manifest.step_ids_file:
        ids, digests = [], []
        for line in (p.parent / manifest.step_ids_file).read_text().splitlines():
            sid, _, digest = line.partition("\t")
            ids.append(sid)
            digests.append(digest)
        if hash_step_ids(ids) != manifest.step_ids_hash:
            raise ValueError(f"{manifest.step_ids_file} does not match the manifest's step_ids_hash")
        manifest.step_ids, manifest.row_digests = ids, digests
    return manifest
