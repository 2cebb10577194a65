"""An HTTP reward model: POST the trajectory (or its final exchange) as JSON, read a score back.

Parameters: ``url`` (required), ``score_field`` (dotted path into the answer, ``"score"`` by default;
integers index lists, e.g. ``"scores.0"``), ``payload`` (``"messages"``: the final exchange as a chat
list plus ground truth and metadata; ``"trajectory"``: the trajectory and its steps, token ids left out
unless ``include_ids``), ``headers``, ``api_key`` (sent as a bearer token), ``timeout_s`` (30),
``extra_body`` (merged into the payload). Network errors, non-2xx answers and missing or non-numeric
scores become a recorded failure (value None, ``error`` set), never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from steplake.rewards.base import JSON, RewardConfigError, RewardContext, RewardResult, final_text

_ID_FIELDS = ("prompt_ids", "response_ids", "response_logprobs")


def _check_params(params: Mapping[str, Any]) -> None:
    url = params.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise RewardConfigError("http_rm needs a 'url' parameter (http:// or https://)")
    if params.get("payload", "messages") not in ("messages", "trajectory"):
        raise RewardConfigError("http_rm 'payload' must be 'messages' or 'trajectory'")


def build_payload(ctx: RewardContext) -> JSON:
    """The JSON body sent to the reward model."""
    p = ctx.params
    base: JSON = {
        "trajectory_id": ctx.trajectory_id,
        "group_id": ctx.trajectory.get("group_id"),
        "ground_truth": ctx.ground_truth,
        "metadata": ctx.trajectory.get("metadata") or {},
    }
    if p.get("payload", "messages") == "trajectory":
        keep_ids = bool(p.get("include_ids"))
        steps = [s if keep_ids else {k: v for k, v in s.items() if k not in _ID_FIELDS} for s in ctx.steps]
        base.update(trajectory=ctx.trajectory, steps=steps)
    else:
        last = ctx.steps[-1] if ctx.steps else {}
        response = last.get("response") or {}
        answer: JSON = {"role": "assistant", "content": final_text(ctx.steps)}
        if response.get("tool_calls"):
            answer["tool_calls"] = response["tool_calls"]
        base.update(messages=[*(last.get("messages") or []), answer], response=response)
    base.update(p.get("extra_body") or {})
    return base


def read_field(body: Any, path: str) -> Any:
    """Follow a dotted path (``"a.b.0"``) through dicts and lists; KeyError when absent."""
    node = body
    for part in path.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit():
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


class HttpRewardModel:
    """``http_rm``: a remote reward model reached over HTTP."""

    name = "http_rm"
    version = "1"

    def check_params(self, params: Mapping[str, Any]) -> None:
        _check_params(params)

    async def score(self, ctx: RewardContext) -> RewardResult:
        _check_params(ctx.params)
        p = ctx.params
        headers = {str(k): str(v) for k, v in (p.get("headers") or {}).items()}
        if p.get("api_key"):
            headers["Authorization"] = f"Bearer {p['api_key']}"
        timeout = float(p.get("timeout_s", 30.0))
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                answer = await client.post(str(p["url"]), json=build_payload(ctx), headers=headers)
        except httpx.HTTPError as exc:
            return RewardResult.failure(f"reward model unreachable: {type(exc).__name__}: {exc}")
        if answer.status_code >= 300:
            return RewardResult.failure(
                f"reward model answered HTTP {answer.status_code}", body=answer.text[:500]
            )
        return self._parse(answer, str(p.get("score_field", "score")))

    @staticmethod
    def _parse(answer: httpx.Response, field: str) -> RewardResult:
        try:
            body = answer.json()
        except ValueError:
            return RewardResult.failure("reward model answer is not JSON", body=answer.text[:500])
        try:
            raw = read_field(body, field)
        except (KeyError, IndexError):
            return RewardResult.failure(f"reward model answer has no field {field!r}", body=body)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            return RewardResult.failure(f"reward model field {field!r} is not a finite number", raw=raw)
        details = {k: v for k, v in body.items() if k != field} if isinstance(body, dict) else {}
        return RewardResult(float(raw), {"response": details} if details else {})
