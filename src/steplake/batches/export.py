"""Exports of step rows to JSONL, Parquet and a Hugging Face dataset folder, each with a manifest.

One row per step: the step's fields, its trajectory's outcome reward, reward components and curation,
and the recipe's advantage when one was applied. Every format holds the same columns (``EXPORT_SCHEMA``):

=========================== ================= =========================================================
column                      Arrow type        meaning
=========================== ================= =========================================================
``step_id``                 string            the step (unique in an export)
``trajectory_id``           string
``group_id``                string
``step_index``              int32
``channel``                 string
``prompt_ids``              list<int32>       exact ids the model was given
``response_ids``            list<int32>       exact ids sampled
``response_logprobs``       list<float64>     aligned with ``response_ids``; null when not captured.
                                              float64 so values round-trip exactly from the API's JSON
``token_source``            string            upstream / tokenizer / text
``messages``, ``tools``     JSON string       the request as the agent sent it
``response``                JSON string       ``{content, tool_calls, reasoning}``
``finish_reason``, ``model`` string
``sampling``, ``usage``     JSON string
``latency_ms``              float64
``policy_version``          int64
``step_reward``             float64           the step's own reward (``Step.reward``)
``metadata``, ``provenance`` JSON string      the step's
``continuity``              string            first / clean / realigned / fork
``parent_step_id``          string
``shared_prefix_len``       int32
``created_at``              float64           epoch seconds
``reward``                  float64           the trajectory's (outcome) reward, as in batch rows
``reward_components``       JSON string       the trajectory's ``{name: {value, version}}``
``advantage``               float64           set by the recipe (grpo, rloo ...), else null
``quality``                 string            effective curation: the step's label unless
``trainable``               bool              ``unreviewed``, else the trajectory's; trainable = both;
``tags``                    list<string>      tags = union of both, sorted
``curation``                JSON string       the step's own curation record
``trajectory_curation``     JSON string       the trajectory's curation record
``trajectory_metadata``     JSON string       the trajectory's metadata (task, ground truth ...)
=========================== ================= =========================================================

JSON columns hold compact JSON text (keys sorted) in Parquet and HF; in JSONL they are inline objects.
:func:`read_export` decodes any format back into identical row dicts.
"""

from __future__ import annotations

import array
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from steplake.batches.manifest import (
    Manifest,
    ManifestBuilder,
    batch_digests,
    hash_content,
    manifest_path_for,
    write_manifest,
)
from steplake.errors import BadRequestError
from steplake.types import Json

FORMATS = ("jsonl", "parquet", "hf")
SCHEMA_VERSION = 1
_JSON_TYPE = pa.string()

# (name, arrow type, kind) — kind drives normalization and encoding
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("step_id", pa.string(), "str"),
    ("trajectory_id", pa.string(), "str"),
    ("group_id", pa.string(), "str"),
    ("step_index", pa.int32(), "int"),
    ("channel", pa.string(), "str"),
    ("prompt_ids", pa.list_(pa.int32()), "ids"),
    ("response_ids", pa.list_(pa.int32()), "ids"),
    ("response_logprobs", pa.list_(pa.float64()), "floats"),
    ("token_source", pa.string(), "str"),
    ("messages", _JSON_TYPE, "json"),
    ("tools", _JSON_TYPE, "json"),
    ("response", _JSON_TYPE, "json"),
    ("finish_reason", pa.string(), "str"),
    ("model", pa.string(), "str"),
    ("sampling", _JSON_TYPE, "json"),
    ("usage", _JSON_TYPE, "json"),
    ("latency_ms", pa.float64(), "float"),
    ("policy_version", pa.int64(), "int"),
    ("step_reward", pa.float64(), "float"),
    ("metadata", _JSON_TYPE, "json"),
    ("provenance", _JSON_TYPE, "json"),
    ("continuity", pa.string(), "str"),
    ("parent_step_id", pa.string(), "str"),
    ("shared_prefix_len", pa.int32(), "int"),
    ("created_at", pa.float64(), "float"),
    ("reward", pa.float64(), "float"),
    ("reward_components", _JSON_TYPE, "json"),
    ("advantage", pa.float64(), "float"),
    ("quality", pa.string(), "str"),
    ("trainable", pa.bool_(), "bool"),
    ("tags", pa.list_(pa.string()), "tags"),
    ("curation", _JSON_TYPE, "json"),
    ("trajectory_curation", _JSON_TYPE, "json"),
    ("trajectory_metadata", _JSON_TYPE, "json"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c[0] for c in COLUMNS)
JSON_COLUMNS = frozenset(name for name, _, kind in COLUMNS if kind == "json")
EXPORT_SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=name != "step_id") for name, typ, _ in COLUMNS],
    metadata={b"steplake.schema_version": str(SCHEMA_VERSION).encode()},
)

_STEP_FIELDS = (
    "step_id", "trajectory_id", "step_index", "channel", "prompt_ids", "response_ids", "response_logprobs",
    "token_source", "messages", "tools", "response", "finish_reason", "model", "sampling", "usage",
    "latency_ms", "policy_version", "metadata", "provenance", "continuity", "parent_step_id",
    "shared_prefix_len", "created_at",
)  # fmt: skip


class ExportError(BadRequestError):
    """Bad export request: unknown format, existing target, row without a step id."""

    code = "export_error"


def _effective_curation(
    step_cur: Mapping[str, Any], traj_cur: Mapping[str, Any]
) -> tuple[Any, bool, list[str]]:
    quality = step_cur.get("quality")
    if quality in (None, "unreviewed"):
        quality = traj_cur.get("quality") or quality or "unreviewed"
    trainable = bool(step_cur.get("trainable", True)) and bool(traj_cur.get("trainable", True))
    tags = sorted({*(step_cur.get("tags") or []), *(traj_cur.get("tags") or [])})
    return quality, trainable, tags


def to_export_row(step: Mapping[str, Any], trajectory: Mapping[str, Any] | None = None, *,
                  advantage: float | None = None) -> Json:  # fmt: skip
    """An export row from a step dict (CONTRACT §1) and its trajectory dict (or a batch trajectory)."""
    traj = trajectory or {}
    row: Json = {name: step.get(name) for name in _STEP_FIELDS}
    row["group_id"] = step.get("group_id") or traj.get("group_id")
    row["step_reward"] = step.get("reward")
    row["reward"] = traj.get("reward")
    row["reward_components"] = traj.get("reward_components")
    if advantage is None:
        advantage = step.get("advantage")
    if advantage is None:
        advantage = traj.get("advantage")
    row["advantage"] = advantage
    traj_cur = traj.get("curation") or {k: traj[k] for k in ("quality", "trainable", "tags") if k in traj}
    step_cur = step.get("curation") or {}
    row["quality"], row["trainable"], row["tags"] = _effective_curation(step_cur, traj_cur)
    row["curation"] = step.get("curation")
    row["trajectory_curation"] = traj.get("curation")
    row["trajectory_metadata"] = traj.get("metadata")
    return row


def rows_from_batch(batch: Mapping[str, Any]) -> Iterator[Json]:
    """Export rows from a batch answer (CONTRACT §4: ``groups → trajectories → steps``)."""
    for group in batch.get("groups") or []:
        for traj in group.get("trajectories") or []:
            with_group = {"group_id": group.get("group_id"), **traj}
            for step in sorted(traj.get("steps") or [], key=lambda s: s.get("step_index") or 0):
                yield to_export_row(step, with_group)


def _ints(v: Any) -> list[int]:
    if v is None:
        return []
    if type(v) is list:
        return v
    return [int(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]


_CONVERT: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "floats": lambda v: list(map(float, v)),
}


def normalize_row(row: Mapping[str, Any]) -> Json:
    """The export row in Python form: exactly ``COLUMN_NAMES`` with their Python types (missing → null,
    unknown keys dropped, JSON columns as objects). :func:`read_export` yields rows equal to this."""
    if row.get("step_id") is None:
        raise ExportError("every exported row needs a step_id")
    out: Json = {}
    for name, _, kind in COLUMNS:
        v: Any = row.get(name)
        if kind == "ids":
            out[name] = _ints(v)
        elif kind == "tags":
            out[name] = [str(t) for t in v or []]
        elif v is None or kind == "json":
            out[name] = v
        else:
            out[name] = _CONVERT[kind](v)
    return out


_JSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


_I32 = np.iinfo(np.int32)


def _id_buffer(v: Any) -> Any:
    """Token ids as a contiguous int32 buffer. Python lists go through ``array('i')`` (rejects
    non-integers and out-of-range ids); numpy arrays and ``array('i')`` take a fast path (no per-id work)."""
    if v is None:
        return array.array("i")
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {v.dtype}")
        if v.size and v.dtype != np.int32 and (v.min() < _I32.min or v.max() > _I32.max):
            raise OverflowError("token id out of int32 range")
        return np.ascontiguousarray(v, dtype=np.int32)
    if isinstance(v, array.array) and v.typecode == "i":
        return v
    return array.array("i", v)


def _id_lists(values: list[Any], typ: pa.ListType) -> pa.Array:
    """list<int32> from per-row ids, ~2x faster than ``pa.array`` for Python lists: each row becomes an
    int32 buffer (:func:`_id_buffer`), then one contiguous child buffer."""
    parts = [_id_buffer(v) for v in values]
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    flat = pa.py_buffer(b"".join(parts))
    child = pa.Array.from_buffers(typ.value_type, int(offsets[-1]), [None, flat])
    return pa.ListArray.from_arrays(pa.array(offsets), child)


def _float_lists(values: list[Any], typ: pa.ListType) -> pa.Array:
    """list<float64> (nullable rows). Python lists convert fine through ``pa.array``; numpy arrays are
    joined into one contiguous buffer instead (no per-value work)."""
    if not any(isinstance(v, np.ndarray) for v in values):
        return pa.array(values, type=typ)
    parts: list[Any] = [
        array.array("d") if v is None else np.ascontiguousarray(v, dtype=np.float64)
        if isinstance(v, np.ndarray) else array.array("d", v)
        for v in values
    ]  # fmt: skip
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    child = pa.Array.from_buffers(typ.value_type, int(offsets[-1]), [None, pa.py_buffer(b"".join(parts))])
    nulls = pa.array([v is None for v in values], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), child, mask=nulls)


def _column(rows: list[Mapping[str, Any]], name: str, typ: pa.DataType, kind: str) -> pa.Array:
    values = [r.get(name) for r in rows]
    if kind == "json":
        values = [None if v is None else orjson.dumps(v, option=_JSON_OPTS) for v in values]
    elif kind == "ids":
        return _id_lists(values, typ)
    elif kind == "floats":
        return _float_lists(values, typ)
    elif kind == "tags":
        values = [[] if v is None else [str(t) for t in v] for v in values]
    elif kind == "str":
        values = [v if v is None or type(v) is str else str(v) for v in values]
    elif kind == "bool":
        values = [None if v is None else bool(v) for v in values]
    return pa.array(values, type=typ)


def record_batch(rows: list[Mapping[str, Any]]) -> pa.RecordBatch:
    """Export rows → one Arrow record batch in ``EXPORT_SCHEMA``, built column by column."""
    for r in rows:
        if r.get("step_id") is None:
            raise ExportError("every exported row needs a step_id")
    try:
        arrays = [_column(rows, name, typ, kind) for name, typ, kind in COLUMNS]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, orjson.JSONEncodeError) as exc:
        raise ExportError(f"a row does not fit the export schema: {exc}") from exc
    return pa.RecordBatch.from_arrays(arrays, schema=EXPORT_SCHEMA)


def _jsonl_row(row: Mapping[str, Any]) -> Json:
    out = {name: row.get(name) for name in COLUMN_NAMES}
    for name in ("prompt_ids", "response_ids", "tags"):
        if out[name] is None:
            out[name] = []
    return out


class _Writer(Protocol):
    def write(self, rows: list[Mapping[str, Any]], batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        self._f = path.open("wb")

    def write(self, rows: list[Mapping[str, Any]], batch: pa.RecordBatch) -> None:
        opt = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        self._f.write(b"".join(orjson.dumps(_jsonl_row(r), option=opt) for r in rows))

    def close(self) -> None:
        self._f.close()

    def abort(self) -> None:
        self._f.close()


_DICTIONARY_COLUMNS = [
    n for n in COLUMN_NAMES if n in ("channel", "group_id", "trajectory_id", "token_source", "finish_reason",
                                     "model", "continuity", "quality", "policy_version", "step_index")
]  # fmt: skip
_STATS_COLUMNS = [n for n, t, kind in COLUMNS if kind in ("str", "int", "float", "bool")]


class _ParquetWriter:
    def __init__(self, path: Path) -> None:
        self._w = pq.ParquetWriter(
            str(path),
            EXPORT_SCHEMA,
            compression="zstd",
            use_dictionary=_DICTIONARY_COLUMNS,  # not the id/logprob lists: dictionary encoding is wasted there
            write_statistics=_STATS_COLUMNS,
        )

    def write(self, rows: list[Mapping[str, Any]], batch: pa.RecordBatch) -> None:
        self._w.write_batch(batch)

    def close(self) -> None:
        self._w.close()

    def abort(self) -> None:
        self._w.close()


class _HfWriter:
    """Streams Arrow batches to a temporary IPC file, then lets ``datasets`` save the folder."""

    def __init__(self, path: Path) -> None:
        self._dir = path
        self._arrow = path.with_name(path.name + ".arrow")
        self._sink = pa.OSFile(str(self._arrow), "wb")
        self._w = pa.ipc.new_stream(self._sink, EXPORT_SCHEMA)
        self._rows = 0

    def write(self, rows: list[Mapping[str, Any]], batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._w.write_batch(batch)
            self._rows += batch.num_rows

    def abort(self) -> None:
        self._w.close()
        self._sink.close()

    def close(self) -> None:
        import datasets  # optional dependency: only the hf format needs it

        self._w.close()
        self._sink.close()
        quiet = datasets.utils.are_progress_bars_disabled()
        datasets.utils.disable_progress_bars()
        try:
            if self._rows:
                dataset = datasets.Dataset.from_file(str(self._arrow), in_memory=False)
            else:  # datasets cannot open an IPC file without batches
                features = datasets.Features.from_arrow_schema(EXPORT_SCHEMA)
                dataset = datasets.Dataset.from_dict({n: [] for n in COLUMN_NAMES}, features=features)
            dataset.save_to_disk(str(self._dir))
            del dataset
        finally:
            if not quiet:
                datasets.utils.enable_progress_bars()
            self._arrow.unlink(missing_ok=True)


def _open_writer(fmt: str, tmp: Path) -> _Writer:
    if fmt == "jsonl":
        return _JsonlWriter(tmp)
    if fmt == "parquet":
        return _ParquetWriter(tmp)
    return _HfWriter(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _write_all(
    writer: _Writer, rows: Iterable[Mapping[str, Any]], builder: ManifestBuilder, size: int
) -> None:
    """Encode chunk k+1 while a worker thread writes chunk k (Parquet encoding and zstd release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="steplake-export") as pool:
        pending: Future[None] | None = None
        try:
            for chunk in _chunks(rows, size):
                batch = record_batch(chunk)
                builder.add_batch(batch, batch_digests(batch))
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write, chunk, batch)
            if pending is not None:
                pending.result()
            if builder.steps == 0:
                writer.write([], record_batch([]))
        except BaseException:
            if pending is not None:
                wait([pending])
            writer.abort()
            raise
    writer.close()


def write_export(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    format: str,
    *,
    manifest_info: Mapping[str, Any] | None = None,
    chunk_rows: int = 10_000,
    overwrite: bool = False,
) -> Manifest:
    """Stream ``rows`` (export rows, see :func:`to_export_row`) to ``path`` in ``format`` and write the
    manifest beside it (:func:`manifest_path_for`). ``manifest_info`` may carry ``filters``, ``recipe``
    and anything else (kept under ``selection``). Rows are processed ``chunk_rows`` at a time (one
    Parquet row group each); the target appears only once complete (written under a temporary name)."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    target = Path(path)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    builder = ManifestBuilder()
    try:
        _write_all(_open_writer(format, tmp), rows, builder, max(1, chunk_rows))
        _remove(target)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        _remove(tmp.with_name(tmp.name + ".arrow"))
        raise
    files = sorted(p.name for p in target.iterdir()) if target.is_dir() else [target.name]
    info = {**(manifest_info or {}), "columns": list(COLUMN_NAMES), "schema_version": SCHEMA_VERSION}
    manifest = builder.build(format=format, path=str(target), files=files, info=info)
    write_manifest(manifest, manifest_path_for(target, format))
    return manifest


def detect_format(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if p.is_dir():
        return "hf"
    if p.suffix in (".parquet", ".pq"):
        return "parquet"
    return "jsonl"


def _decode(row: Json) -> Json:
    for name in JSON_COLUMNS:
        v = row.get(name)
        if v is not None:
            row[name] = orjson.loads(v)
    return row


def _arrow_batches(path: Path, fmt: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if fmt == "parquet":
        yield from pq.ParquetFile(str(path)).iter_batches(batch_size=batch_rows)
        return
    # a datasets folder: state.json lists its Arrow IPC stream shards, read directly
    state = orjson.loads((path / "state.json").read_bytes())
    for shard in state.get("_data_files") or []:
        with pa.memory_map(str(path / shard["filename"])) as source:
            yield from pa.ipc.open_stream(source)


def read_export(
    path: str | os.PathLike[str], format: str | None = None, *, batch_rows: int = 10_000
) -> Iterator[Json]:
    """Stream the rows of an export back as normalized row dicts (JSON columns decoded)."""
    fmt = format or detect_format(path)
    p = Path(path)
    if fmt == "jsonl":
        with p.open("rb") as f:
            for line in f:
                if line.strip():
                    yield normalize_row(orjson.loads(line))
        return
    for batch in _arrow_batches(p, fmt, batch_rows):
        for row in batch.to_pylist():
            yield _decode(row)


def _digests(rows: Iterable[Mapping[str, Any]], chunk_rows: int = 10_000) -> Iterator[tuple[str, str]]:
    for chunk in _chunks(rows, chunk_rows):
        ids = [str(r["step_id"]) for r in chunk if r.get("step_id") is not None]
        yield from zip(ids, batch_digests(record_batch(chunk)), strict=True)


def content_hash(rows: Iterable[Mapping[str, Any]]) -> str:
    """The manifest's ``content_hash`` for these rows, whatever their order or source format."""
    return hash_content(_digests(rows))


def verify(manifest: Manifest, rows: Iterable[Mapping[str, Any]]) -> bool:
    """True when ``rows`` are exactly the content the manifest describes."""
    return content_hash(rows) == manifest.content_hash


def diff_rows(manifest: Manifest, rows: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Which step ids are ``missing``, ``extra`` or ``changed`` relative to the manifest's sidecar
    (needs a manifest read with :func:`~steplake.batches.manifest.read_manifest`)."""
    recorded = dict(zip(manifest.step_ids, manifest.row_digests, strict=True))
    seen = dict(_digests(rows))
    return {
        "missing": sorted(set(recorded) - set(seen)),
        "extra": sorted(set(seen) - set(recorded)),
        "changed": sorted(s for s in set(recorded) & set(seen) if recorded[s] != seen[s]),
    }


__all__ = [
    "COLUMNS", "COLUMN_NAMES", "EXPORT_SCHEMA", "FORMATS", "JSON_COLUMNS", "SCHEMA_VERSION", "ExportError",
    "content_hash", "detect_format", "diff_rows", "normalize_row", "read_export",
    "record_batch", "rows_from_batch", "to_export_row", "verify", "write_export",
]  # fmt: skip
