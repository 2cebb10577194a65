"""Export manifests: what an export contains and how to prove a later rebuild is identical.

A manifest is a JSON file beside the export (``<file>.manifest.json``, or ``steplake_manifest.json``
inside a Hugging Face dataset folder) plus a sidecar listing every exported step id with its row digest
(``<file>.stepids``: ``step_id<TAB>sha256`` lines sorted by step id), so the exact selection can be
re-read and re-exported later.

Hashes (all sha256, hex):

- row digest (:func:`batch_digests`): computed from the row as encoded in the export's Arrow schema, so
  it does not depend on the file format or on row-group layout: sha256 of the orjson array of every
  column that is not a list of numbers, in schema order (JSON columns as their sorted-key JSON text),
  followed, for each ``list<int>``/``list<float>`` column in schema order, by its length as 8 bytes
  little-endian (-1 for null) and its raw little-endian values.
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

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, Field

MANIFEST_VERSION = 1
HF_MANIFEST_NAME = "steplake_manifest.json"

Json = dict[str, Any]


def steplake_version() -> str:
    try:
        return importlib.metadata.version("steplake")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


_NULL_LEN = struct.pack("<q", -1)


def _numeric_list(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
    )


def _list_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    dtype = values.dtype.newbyteorder("<")
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    return offsets, values.astype(dtype, copy=False), valid


def batch_digests(batch: pa.RecordBatch) -> list[str]:
    """One digest per row of ``batch`` (see the module docstring for the exact definition)."""
    numeric = [i for i, f in enumerate(batch.schema) if _numeric_list(f.type)]
    scalars = [batch.column(i).to_pylist() for i in range(batch.num_columns) if i not in numeric]
    lists = [_list_parts(batch.column(i)) for i in numeric]
    out = []
    for r in range(batch.num_rows):
        h = hashlib.sha256(orjson.dumps([col[r] for col in scalars]))
        for offsets, values, valid in lists:
            if valid is not None and not valid[r]:
                h.update(_NULL_LEN)
                continue
            start, end = int(offsets[r]), int(offsets[r + 1])
            h.update(struct.pack("<q", end - start))
            h.update(values[start:end].tobytes())
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


def _len(v: Any) -> int:
    return 0 if v is None else len(v)


class ManifestBuilder:
    """Accumulates what a manifest needs while rows stream by (ids and digests only, not the rows)."""

    def __init__(self) -> None:
        self._pairs: list[tuple[str, str]] = []
        self._curation: list[str] = []
        self._trajectories: set[str] = set()
        self._groups: set[str] = set()
        self._policies: set[int] = set()
        self._rewards: dict[str, set[str]] = {}
        self.counts = ExportCounts()

    def add(self, row: Mapping[str, Any], digest: str) -> None:
        """Record one export row and its digest."""
        sid = str(row["step_id"])
        self._pairs.append((sid, digest))
        quality, trainable = row.get("quality"), row.get("trainable")
        curation = [
            None if quality is None else str(quality),
            None if trainable is None else bool(trainable),
            sorted(str(t) for t in row.get("tags") or []),
        ]
        self._curation.append(f"{sid}\t{orjson.dumps(curation).decode()}")
        self._trajectories.add(str(row.get("trajectory_id")))
        if row.get("group_id") is not None:
            self._groups.add(str(row["group_id"]))
        if row.get("policy_version") is not None:
            self._policies.add(int(row["policy_version"]))
        self._add_rewards(row.get("reward_components"))
        n_prompt, n_response = _len(row.get("prompt_ids")), _len(row.get("response_ids"))
        self.counts.steps += 1
        self.counts.prompt_tokens += n_prompt
        self.counts.response_tokens += n_response
        self.counts.tokens += n_prompt + n_response

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
        self.counts.trajectories = len(self._trajectories)
        self.counts.groups = len(self._groups)
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
            counts=self.counts.model_copy(),
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
    body = orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    _atomic_write(target, body + b"\n")
    return target


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest (a manifest file, or an ``hf`` export folder) with its step ids.

    Raises ``ValueError`` if the sidecar does not match ``step_ids_hash``."""
    p = Path(path)
    if p.is_dir():
        p = p / HF_MANIFEST_NAME
    manifest = Manifest.model_validate(orjson.loads(p.read_bytes()))
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
