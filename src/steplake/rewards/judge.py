"""LLM judges through any OpenAI-compatible endpoint (by default the gateway's own upstream).

``llm_judge`` (pointwise): a rubric prompt per trajectory; the judge ends with ``Score: N/10`` which
becomes ``N / 10`` in [0, 1]. ``llm_rank`` (group-relative): one prompt shows all rollouts of a group
and asks for a ranking ``Ranking: 2 > 1 > 3``; rank r of n maps to ``1 - r / (n - 1)``. A reply that
cannot be parsed is a recorded failure (value None, ``details.raw`` keeps the reply).

Parameters: ``base_url`` (default ``env.llm_base_url``; OpenAI style, e.g. ``http://host/v1``),
``model`` (default ``env.llm_model``, else the first of ``GET /models``), ``api_key``, ``rubric``,
``scale`` (10), ``include_ground_truth`` (true), ``transcript`` (false: judge only the final answer),
``max_chars`` (6000 per response), ``max_tokens`` (256), ``temperature`` (0), ``timeout_s`` (60).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from steplake.errors import JudgeError
from steplake.rewards.base import (
    JSON,
    RewardConfigError,
    RewardContext,
    RewardResult,
    Rollout,
    content_text,
    final_text,
    ground_truth_of,
    task_text,
)

DEFAULT_RUBRIC = "Is the response correct, complete and helpful for the task? Penalize wrong final answers."
_SYSTEM = "You are a strict, impartial grader of AI assistant responses. Follow the requested output format."
_SCORE_RE = re.compile(
    r"score\s*(?:is|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)|out\s+of\s+(\d+(?:\.\d+)?))?",
    re.I,
)
_RATIO_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_RANKING_RE = re.compile(r"ranking\s*[:=]?\s*(.+)", re.I)


def parse_score(text: str, scale: float = 10.0) -> float | None:
    """``Score: 7/10`` → 0.7; ``score 3 out of 5`` → 0.6; a bare ``8`` → 0.8; None if unparseable."""
    matches = _SCORE_RE.findall(text)
    if matches:
        value, denom_a, denom_b = matches[-1]
        denom = float(denom_a or denom_b or scale)
    else:
        ratios = _RATIO_RE.findall(text)
        if ratios:
            value, denom_s = ratios[-1]
            denom = float(denom_s)
        elif re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", text):
            value, denom = text.strip(), scale
        else:
            return None
    if denom <= 0:
        return None
    return min(1.0, max(0.0, float(value) / denom))


def parse_ranking(text: str, n: int) -> list[int] | None:
    """0-based indexes best-first from ``Ranking: 2 > 1 > 3`` (1-based in the text); None if no valid
    ranking. Repeated or out-of-range numbers are dropped; a partial ranking (even just the best one)
    is returned as is and :func:`ranking_scores` gives the unranked rest the mean of the places left."""
    lines = _RANKING_RE.findall(text)
    candidates = lines[-1:] if lines else [ln for ln in reversed(text.splitlines()) if ">" in ln][:1]
    for line in candidates:
        order: list[int] = []
        for token in re.findall(r"\d+", line):
            index = int(token) - 1
            if 0 <= index < n and index not in order:
                order.append(index)
        if order:
            return order
    return None


def ranking_scores(order: Sequence[int], n: int) -> list[float]:
    """Scores in [0, 1] from a best-first order; unranked entries share the remaining places' mean."""
    if n == 1:
        return [1.0]
    position = {index: float(rank) for rank, index in enumerate(order)}
    missing = [i for i in range(n) if i not in position]
    if missing:
        mean_rank = sum(range(len(order), n)) / len(missing)
        position.update({i: mean_rank for i in missing})
    return [1.0 - position[i] / (n - 1) for i in range(n)]


async def chat(base_url: str, messages: list[JSON], params: Mapping[str, Any]) -> str:
    """One non-streaming chat completion; returns the assistant's text. Raises :class:`JudgeError`."""
    url = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {params['api_key']}"} if params.get("api_key") else {}
    try:
        async with httpx.AsyncClient(timeout=float(params.get("timeout_s", 60.0)), headers=headers) as client:
            model = params.get("model") or await _first_model(client, url)
            body = {
                "model": model,
                "messages": messages,
                "max_tokens": int(params.get("max_tokens", 256)),
                "temperature": float(params.get("temperature", 0.0)),
            }
            answer = await client.post(f"{url}/chat/completions", json=body)
    except httpx.HTTPError as exc:
        raise JudgeError(f"judge unreachable: {type(exc).__name__}: {exc}") from exc
    if answer.status_code >= 300:
        raise JudgeError(f"judge answered HTTP {answer.status_code}: {answer.text[:300]}")
    try:
        return content_text(answer.json()["choices"][0]["message"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise JudgeError(f"judge answer is not a chat completion: {answer.text[:300]}") from exc


async def _first_model(client: httpx.AsyncClient, url: str) -> str:
    try:
        listed = (await client.get(f"{url}/models")).json()
        return str(listed["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return "default"


def response_text(steps: Sequence[JSON], *, transcript: bool, max_chars: int) -> str:
    """What the judge sees of a rollout: the final answer, or every assistant turn and tool call."""
    if not transcript:
        text = final_text(steps)
    else:
        parts = []
        for step in steps:
            response = step.get("response") or {}
            if content_text(response.get("content")).strip():
                parts.append(f"Assistant: {content_text(response.get('content'))}")
            for call in response.get("tool_calls") or []:
                fn = call.get("function") or call
                parts.append(f"[tool call {fn.get('name')}({fn.get('arguments', fn.get('input'))})]")
        text = "\n".join(parts)
    return text if len(text) <= max_chars else text[:max_chars] + "\n[... truncated]"


def _reference(rollout: Rollout, params: Mapping[str, Any]) -> str:
    truth = params.get("ground_truth", ground_truth_of(rollout.trajectory, rollout.steps))
    if truth is None or not params.get("include_ground_truth", True):
        return ""
    return f"Reference answer:\n{truth}\n\n"


def pointwise_prompt(rollout: Rollout, params: Mapping[str, Any]) -> list[JSON]:
    scale = int(params.get("scale", 10))
    answer = response_text(
        rollout.steps, transcript=bool(params.get("transcript")), max_chars=int(params.get("max_chars", 6000))
    )
    user = (
        f"Rubric:\n{params.get('rubric') or DEFAULT_RUBRIC}\n\nTask:\n{task_text(rollout.steps)}\n\n"
        f"{_reference(rollout, params)}Response to grade:\n{answer}\n\n"
        f"Grade the response against the rubric. Give a one-sentence justification, then end with a "
        f"final line exactly of the form 'Score: N/{scale}' with N an integer from 0 to {scale}."
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def ranking_prompt(rollouts: Sequence[Rollout], params: Mapping[str, Any]) -> list[JSON]:
    max_chars = int(params.get("max_chars", 6000)) // max(1, len(rollouts))
    shown = "\n\n".join(
        f"Response {i + 1}:\n"
        + response_text(r.steps, transcript=bool(params.get("transcript")), max_chars=max(200, max_chars))
        for i, r in enumerate(rollouts)
    )
    example = " > ".join(str(i + 1) for i in range(len(rollouts)))
    user = (
        f"Rubric:\n{params.get('rubric') or DEFAULT_RUBRIC}\n\nTask:\n{task_text(rollouts[0].steps)}\n\n"
        f"{_reference(rollouts[0], params)}{shown}\n\nRank all {len(rollouts)} responses from best to worst "
        f"against the rubric. End with a final line of the form 'Ranking: {example}' (best first)."
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


async def judge_pointwise(base_url: str, rollout: Rollout, params: Mapping[str, Any]) -> RewardResult:
    """Grade one rollout with the rubric at ``base_url``; failures are recorded, not raised."""
    try:
        reply = await chat(base_url, pointwise_prompt(rollout, params), params)
    except JudgeError as exc:
        return RewardResult.failure(str(exc))
    value = parse_score(reply, float(params.get("scale", 10)))
    if value is None:
        return RewardResult.failure("judge reply has no parseable score", raw=reply[:2000])
    return RewardResult(value, {"raw": reply[:2000]})


async def judge_ranking(
    base_url: str, rollouts: Sequence[Rollout], params: Mapping[str, Any]
) -> list[RewardResult]:
    """Rank a group's rollouts in one prompt; one result per rollout, in the given order."""
    if len(rollouts) == 1:
        single = await judge_pointwise(base_url, rollouts[0], params)
        return [RewardResult(single.value, {**single.details, "fallback": "pointwise"}, single.error)]
    try:
        reply = await chat(base_url, ranking_prompt(rollouts, params), params)
    except JudgeError as exc:
        return [RewardResult.failure(str(exc)) for _ in rollouts]
    order = parse_ranking(reply, len(rollouts))
    if order is None:
        return [
            RewardResult.failure("judge reply has no parseable ranking", raw=reply[:2000]) for _ in rollouts
        ]
    scores = ranking_scores(order, len(rollouts))
    ids = [r.trajectory_id for r in rollouts]
    ranking = [ids[i] for i in order]
    partial = len(order) < len(rollouts)
    return [RewardResult(s, {"ranking": ranking, "partial": partial, "raw": reply[:2000]}) for s in scores]


def _base_url(ctx: RewardContext) -> str:
    url = ctx.params.get("base_url") or ctx.env.llm_base_url
    if not url:
        raise RewardConfigError("LLM judge needs a 'base_url' parameter or the server's upstream")
    return str(url)


def _judge_params(ctx: RewardContext) -> dict[str, Any]:
    params = dict(ctx.params)
    params.setdefault("model", ctx.env.llm_model)
    params.setdefault("api_key", ctx.env.llm_api_key)
    params.setdefault("timeout_s", ctx.env.http_timeout_s)
    return params


class LlmJudge:
    """``llm_judge``: pointwise rubric grading."""

    name = "llm_judge"
    version = "1"

    async def score(self, ctx: RewardContext) -> RewardResult:
        return await judge_pointwise(_base_url(ctx), ctx.rollout, _judge_params(ctx))


class LlmRanker:
    """``llm_rank``: group-relative ranking of a group's rollouts (``group_relative = True``).

    ``score_group`` ranks once for the whole group; ``score`` ranks ``ctx.group_rollouts()`` and keeps
    this trajectory's score (one judge call per trajectory: prefer ``score_group``)."""

    name = "llm_rank"
    version = "1"
    group_relative = True

    async def score(self, ctx: RewardContext) -> RewardResult:
        rollouts = ctx.group_rollouts()
        results = await judge_ranking(_base_url(ctx), rollouts, _judge_params(ctx))
        return results[[r.trajectory_id for r in rollouts].index(ctx.trajectory_id)]

    async def score_group(self, ctxs: Sequence[RewardContext]) -> list[RewardResult]:
        if not ctxs:
            return []
        rollouts = [c.rollout for c in ctxs]
        return await judge_ranking(_base_url(ctxs[0]), rollouts, _judge_params(ctxs[0]))
