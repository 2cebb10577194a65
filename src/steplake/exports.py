"""Exports of the pool: select trajectories → steps → rows → file + manifest (``steplake export``,
``POST /api/v1/exports``).

:func:`export_pool` selects one of three ways, then streams the rows to the writer of
:mod:`steplake.batches.export` (trajectories are loaded ``CHUNK_TRAJECTORIES`` at a time, never the
whole pool):

- **filters** (default): trajectories matching an :class:`~steplake.filters.ExportFilter` (default
  ``status=complete``; abandoned ones never, open ones only with ``include_open``), in pool order;
- **batch_id**: exactly the steps a recorded batch served (its recipe unless another is given);
- **from_manifest**: exactly the step ids of an earlier export, with its recipe re-applied to the same
  trajectories, so the content hash is the same however many steps arrived since. When the content
  differs (curation edited, rewards re-run, steps deleted) it raises :class:`ExportChangedError` naming
  the ``missing`` / ``extra`` / ``changed`` step ids and removes what it wrote, unless ``allow_changes``.

Recipes (``grpo``, ``rloo``, ``reinforce_pp`` ...) run on trajectory rewards, grouped by ``group_id``,
over the whole selection (``reinforce_pp`` whitens over all of it); every step of a trajectory carries
its advantage in the ``advantage`` column. ``dpo`` pairs are not rows: use ``POST /batches`` for them.

A rebuild records its source as ``selection.source_manifest``, a path relative to the new manifest's folder.
Beside the manifest, ``<manifest>.trajectories`` lists ``trajectory_id<TAB>group_id`` of the selection
(recipe input), which ``from_manifest`` reads back.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batches.export import FORMATS, ExportError, diff_rows, read_export, to_export_row, write_export
from .batches.manifest import HF_MANIFEST_NAME, Manifest, manifest_path_for, read_manifest, write_manifest
from .batches.recipes import RECIPES, apply_recipe, drop_zero_variance
from .errors import ConflictError, FilterError, NotFoundError
from .filters import LOCAL_FILTERS, ExportFilter, parse_filter
from .store.base import Store
from .types import Json

PAGE = 500
CHUNK_TRAJECTORIES = 200
# filter names: trajectory-list filters go to the store; the batch-style ones (LOCAL_FILTERS) apply here
FILTERS = frozenset(ExportFilter.model_fields)


class ExportChangedError(ConflictError):
    """A ``from_manifest`` rebuild whose content differs; ``details`` holds the diff."""

    code = "export_changed"


def normalize_filters(filters: Mapping[str, Any] | None, channel: str | None = None) -> Json:
    """The filters given, typed (``parse_filter`` as an :class:`ExportFilter`; ``channel`` wins over a
    ``channel`` filter); an unknown name or a bad value is an ``ExportError``."""
    raw = {**(filters or {}), **({"channel": channel} if channel is not None else {})}
    try:
        return parse_filter(raw, ExportFilter).model_dump(exclude_none=True)
    except FilterError as e:
        raise ExportError(e.message) from None


@dataclass
class _Plan:
    """What to write: trajectory ids (grouped), their advantages, and optionally the exact step ids."""

    trajectories: list[Json]  # light: trajectory_id, group_id, reward, curation.quality, steps=[]
    recipe: str | None = None
    options: Json = field(default_factory=dict)  # min_reward, drop_zero_variance
    step_ids: set[str] | None = None
    trainable_only: bool = False
    order: list[str] = field(default_factory=list)
    advantages: dict[str, float | None] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)

    def run_recipe(self) -> None:
        groups: dict[str, list[Json]] = {}
        for t in self.trajectories:
            groups.setdefault(str(t["group_id"]), []).append(t)
        work: list[Json] = [{"group_id": g, "trajectories": ts} for g, ts in groups.items()]
        drop_zero = bool(self.options.get("drop_zero_variance"))
        if self.recipe in (None, "ppo"):
            if drop_zero:
                before = len(self.trajectories)
                work, _ = drop_zero_variance(work)
                self.excluded["zero_variance"] = before - sum(len(g["trajectories"]) for g in work)
        else:
            res = apply_recipe(self.recipe, work, min_reward=self.options.get("min_reward"),
                               drop_zero_variance_groups=drop_zero)
            work = res.groups
            self.excluded.update(res.excluded)
        for g in work:
            for t in g["trajectories"]:
                self.order.append(t["trajectory_id"])
                self.advantages[t["trajectory_id"]] = t.get("advantage")


def _light(t: Mapping[str, Any]) -> Json:
    return {"trajectory_id": t["trajectory_id"], "group_id": t.get("group_id") or t["trajectory_id"],
            "reward": t.get("reward"), "curation": {"quality": (t.get("curation") or {}).get("quality")},
            "steps": []}


def _keep(t: Mapping[str, Any], f: Mapping[str, Any], policy: int, include_open: bool) -> bool:
    if "status" not in f and t["status"] != "complete" and not (include_open and t["status"] == "open"):
        return False
    quality = (t.get("curation") or {}).get("quality")
    if f.get("quality_in") is not None and quality not in f["quality_in"]:
        return False
    if f.get("quality_not_in") is not None and quality in f["quality_not_in"]:
        return False
    versions = t.get("policy_versions") or []
    return not (f.get("max_staleness") is not None and versions and policy - versions[0] > f["max_staleness"])


def _select_filtered(store: Store, f: Json, include_open: bool) -> list[Json]:
    query = {k: v for k, v in f.items() if k not in LOCAL_FILTERS}
    query["order"] = "asc"
    if "status" not in f and not include_open:
        query["status"] = "complete"
    if f.get("trainable_only"):
        query["trainable"] = True
    if f.get("reward_present"):
        query["has_reward"] = True
    policy = int((store.get_policy() or {}).get("version") or 0) if f.get("max_staleness") is not None else 0
    out: list[Json] = []
    cursor: str | None = None
    while True:
        page = store.list_trajectories(query, cursor, PAGE)
        out += [_light(t) for t in page.items if _keep(t, f, policy, include_open)]
        cursor = page.next_cursor
        if not cursor:
            return out


def _lights(store: Store, tids: Sequence[str]) -> list[Json]:
    out = []
    for tid in dict.fromkeys(tids):
        t = store.get_trajectory(tid, with_steps=False)
        if t is not None:
            out.append(_light(t))
    return out


def _plan_for_batch(store: Store, batch_id: str, recipe: str | None) -> _Plan:
    batch = store.get_batch(batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id!r} not found", code="batch_not_found")
    step_ids = set((batch.get("details") or {}).get("step_ids") or [])
    tids = [tid for tid in batch.get("trajectory_ids") or []
            if any(s["step_id"] in step_ids
                   for s in store.list_steps({"trajectory_id": tid, "order": "asc"}, None, 1000, False).items)]
    filters = (batch.get("request") or {}).get("filters") or {}
    options = {k: filters.get(k) for k in ("min_reward", "drop_zero_variance")}
    return _Plan(_lights(store, tids), recipe or batch.get("recipe"), options, step_ids=step_ids)


def trajectories_file_for(manifest_path: Path) -> Path:
    name = manifest_path.name.removesuffix(".json").removesuffix(".manifest")
    return manifest_path.with_name(name + ".trajectories")


def resolve_manifest(path: str | os.PathLike[str]) -> Path:
    """A manifest path from a manifest file, an hf export folder or an export file."""
    p = Path(path)
    for candidate in (p / HF_MANIFEST_NAME, p.with_name(p.name + ".manifest.json"), p):
        if candidate.is_file() and candidate.name.endswith(".json"):
            return candidate
    raise ExportError(f"no export manifest at {p}")


def _plan_for_manifest(store: Store, manifest: Manifest, manifest_path: Path) -> _Plan:
    listing = trajectories_file_for(manifest_path)
    if listing.is_file():
        tids = [line.split("\t", 1)[0] for line in listing.read_text().splitlines() if line]
    else:  # a manifest written by write_export alone: find each step's trajectory
        tids = [s["trajectory_id"] for sid in manifest.step_ids if (s := store.get_step(sid)) is not None]
    options = {k: manifest.filters.get(k) for k in ("min_reward", "drop_zero_variance")}
    return _Plan(_lights(store, tids), manifest.recipe, options, step_ids=set(manifest.step_ids))


def _has_reward(traj: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> bool:
    return traj.get("reward") is not None or any(s.get("reward") is not None for s in steps)


def _rows(store: Store, plan: _Plan) -> Iterator[Json]:
    for i in range(0, len(plan.order), CHUNK_TRAJECTORIES):
        chunk = plan.order[i:i + CHUNK_TRAJECTORIES]
        steps = store.steps_of(chunk)
        for tid in chunk:
            traj = store.get_trajectory(tid, with_steps=False)
            ss = steps.get(tid) or []
            if traj is None or (plan.recipe == "ppo" and not _has_reward(traj, ss)):
                continue
            for s in ss:
                if plan.step_ids is not None and s["step_id"] not in plan.step_ids:
                    continue
                row = to_export_row(s, traj, advantage=plan.advantages.get(tid))
                if plan.trainable_only and not row["trainable"]:
                    continue
                yield row


def _check_args(format: str, recipe: str | None, batch_id: str | None, from_manifest: Any,
                filters: Json) -> None:
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if recipe is not None and recipe not in RECIPES:
        raise ExportError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if from_manifest is not None and (batch_id or filters or recipe):
        raise ExportError("from_manifest reproduces an export as it was: give no filters, recipe or batch_id")
    if batch_id is not None and filters:
        raise ExportError("batch_id selects exactly a batch's steps: give no filters with it")


def remove_export(path: str | os.PathLike[str], format: str) -> None:
    """Delete an export with its manifest and sidecars."""
    p = Path(path)
    if format == "hf":
        shutil.rmtree(p, ignore_errors=True)
        return
    mp = manifest_path_for(p, format)
    for q in (p, mp, mp.with_name(p.name + ".stepids"), trajectories_file_for(mp)):
        q.unlink(missing_ok=True)


def _diff_details(source: Manifest, new: Manifest, diff: dict[str, list[str]]) -> Json:
    return {"source_content_hash": source.content_hash, "content_hash": new.content_hash,
            "counts": {k: len(v) for k, v in diff.items()}, **{k: v[:20] for k, v in diff.items()}}


def _compare(source: Manifest, new: Manifest, fmt: str, allow_changes: bool) -> None:
    if new.content_hash == source.content_hash:
        return
    diff = diff_rows(source, read_export(new.path, fmt))
    details = _diff_details(source, new, diff)
    summary = ", ".join(f"{n} {k}" for k, n in details["counts"].items())
    if allow_changes:
        new.selection["diff"] = details
        write_manifest(new, manifest_path_for(new.path, fmt))
        return
    remove_export(new.path, fmt)
    first = next((f"; first {k}: {v[0]}" for k, v in diff.items() if v), "")
    raise ExportChangedError(f"the pool's content differs from the manifest ({summary}{first}); "
                             "nothing was written (--allow-changes, or allow_changes: true, writes it anyway)", details=details)


def _relative(target: Path, start: Path) -> str:
    """``target`` relative to ``start`` (a manifest never records an absolute path)."""
    try:
        return os.path.relpath(target.resolve(), start.resolve())
    except ValueError:  # another drive (Windows)
        return target.name


def export_pool(store: Store, *, path: str | os.PathLike[str], format: str, channel: str | None = None,
                filters: Mapping[str, Any] | None = None, recipe: str | None = None, batch_id: str | None = None,
                from_manifest: str | os.PathLike[str] | None = None, include_open: bool = False,
                allow_changes: bool = False, overwrite: bool = False) -> Manifest:
    """Export the selected steps of ``store`` to ``path`` in ``format`` with a manifest (module docstring)."""
    f = normalize_filters(filters, channel)
    _check_args(format, recipe, batch_id, from_manifest, f)
    if Path(path).exists() and not overwrite:
        raise ExportError(f"{path} already exists (--overwrite, or overwrite=True in Python, replaces it)")
    source: Manifest | None = None
    info: Json = {"filters": f, "recipe": recipe, "batch_id": batch_id, "include_open": include_open}
    if from_manifest is not None:
        mpath = resolve_manifest(from_manifest)
        try:
            source = read_manifest(mpath)
        except (ValueError, OSError) as e:
            raise ExportError(f"cannot read manifest {mpath}: {e}") from None
        plan = _plan_for_manifest(store, source, mpath)
        info.update(filters=source.filters, recipe=source.recipe, batch_id=source.selection.get("batch_id"),
                    source_manifest=_relative(mpath, manifest_path_for(path, format).parent),
                    source_content_hash=source.content_hash)
    elif batch_id is not None:
        plan = _plan_for_batch(store, batch_id, recipe)
        info["recipe"] = plan.recipe
    else:
        plan = _Plan(_select_filtered(store, f, include_open), recipe, f,
                     trainable_only=bool(f.get("trainable_only")))
    plan.run_recipe()
    target = Path(path)
    listing = trajectories_file_for(manifest_path_for(target, format))
    info.update(excluded=plan.excluded, trajectories_file=listing.name)
    manifest = write_export(_rows(store, plan), target, format, manifest_info=info, overwrite=overwrite)
    listing.write_text("".join(f"{t['trajectory_id']}\t{t['group_id']}\n" for t in plan.trajectories))
    if source is not None:
        _compare(source, manifest, format, allow_changes)
    return manifest


__all__ = ["FILTERS", "LOCAL_FILTERS", "ExportChangedError", "export_pool", "normalize_filters", "remove_export",
           "resolve_manifest", "trajectories_file_for"]
