"""Built-in reward functions. Each reads its parameters from ``ctx.params``.

| name | value | parameters |
| --- | --- | --- |
| ``final_answer`` | 1.0 if the extracted final answer matches ``ground_truth``, else 0.0 | ``extract`` (auto / boxed / hash / answer / last_number / full), ``rel_tol``, ``abs_tol``, ``ground_truth`` |
| ``exact_match`` | 1.0 if the final text equals the target | ``target`` (default: ground truth), ``normalize`` (true), ``strip`` (true) |
| ``regex_match`` | 1.0 if ``pattern`` matches the final text; with ``group`` the captured group is compared with the ground truth | ``pattern`` (required), ``fullmatch``, ``ignore_case``, ``group`` |
| ``format_check`` | fraction (or all-or-nothing) of format checks passed | ``required`` [regex], ``forbidden`` [regex], ``json``, ``final_without_tool_calls`` (true), ``mode`` (all / fraction) |
| ``length_penalty`` | 0 up to ``target_tokens``, then linearly down to ``-coefficient`` at ``max_tokens`` | ``max_tokens`` (required), ``target_tokens`` (0), ``coefficient`` (1.0), ``scope`` (trajectory / last_step) |
| ``tool_call_success`` | fraction of tool calls with JSON arguments and a non-error result | ``no_calls_value`` (abstain) |
| ``human_feedback`` | mean of feedback signals in [-1, 1]: thumbs ±1, rating scaled, correction ±1 | ``rating_min`` (1), ``rating_max`` (5), ``kinds`` |
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from steplake.rewards.answers import answers_match, extract_answer, normalize_text
from steplake.rewards.base import (
    JSON,
    FunctionReward,
    RewardConfigError,
    RewardContext,
    RewardResult,
    content_text,
    final_text,
)


def _truths(truth: Any) -> list[Any]:
    return list(truth) if isinstance(truth, list | tuple) else [truth]


def final_answer(ctx: RewardContext) -> RewardResult:
    """Final-answer match against ``metadata.ground_truth`` (numbers, normalized text, boxed)."""
    truth = ctx.ground_truth
    if truth is None:
        return RewardResult.failure("no ground_truth in trajectory or first step metadata")
    p = ctx.params
    found = extract_answer(final_text(ctx.steps), str(p.get("extract", "auto")))
    if found is None:
        return RewardResult(0.0, {"extracted": None, "ground_truth": truth})
    how = "text"
    for candidate in _truths(truth):
        ok, how = answers_match(
            found.text,
            candidate,
            rel_tol=float(p.get("rel_tol", 1e-6)),
            abs_tol=float(p.get("abs_tol", 1e-9)),
        )
        if ok:
            return RewardResult(1.0, {"extracted": found.text, "method": found.method, "compare": how})
    return RewardResult(
        0.0, {"extracted": found.text, "method": found.method, "compare": how, "ground_truth": truth}
    )


def exact_match(ctx: RewardContext) -> RewardResult:
    """The final answer text equals ``params.target`` (default: the ground truth)."""
    target = ctx.params.get("target", ctx.ground_truth)
    if target is None:
        return RewardResult.failure("no target parameter and no ground_truth")
    text = final_text(ctx.steps)
    if ctx.params.get("normalize", True):
        hit = any(normalize_text(text) == normalize_text(t) for t in _truths(target))
    elif ctx.params.get("strip", True):
        hit = any(text.strip() == str(t).strip() for t in _truths(target))
    else:
        hit = any(text == str(t) for t in _truths(target))
    return RewardResult(1.0 if hit else 0.0)


def _check_regex(params: Mapping[str, Any]) -> None:
    pattern = params.get("pattern")
    if not isinstance(pattern, str):
        raise RewardConfigError("regex_match needs a 'pattern' string parameter")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RewardConfigError(f"regex_match: invalid pattern {pattern!r}: {exc}") from exc


def regex_match(ctx: RewardContext) -> RewardResult:
    """``pattern`` matches the final text; with ``group``, its capture must match the ground truth."""
    p = ctx.params
    _check_regex(p)
    flags = re.IGNORECASE if p.get("ignore_case") else 0
    regex = re.compile(str(p["pattern"]), flags | re.DOTALL)
    text = final_text(ctx.steps)
    match = regex.fullmatch(text.strip()) if p.get("fullmatch") else regex.search(text)
    if match is None:
        return RewardResult(0.0, {"matched": False})
    group = p.get("group")
    if group is None:
        return RewardResult(1.0, {"matched": True})
    captured = match.group(group)
    truth = ctx.ground_truth
    if truth is None:
        return RewardResult.failure("regex_match with 'group' needs a ground_truth", captured=captured)
    hit = captured is not None and any(answers_match(captured, t)[0] for t in _truths(truth))
    return RewardResult(1.0 if hit else 0.0, {"matched": True, "captured": captured})


def format_check(ctx: RewardContext) -> RewardResult:
    """Output-format checks on the final answer; details list each check's outcome."""
    p = ctx.params
    text = final_text(ctx.steps)
    checks: dict[str, bool] = {}
    for pattern in p.get("required") or []:
        checks[f"required:{pattern}"] = re.search(pattern, text, re.DOTALL) is not None
    for pattern in p.get("forbidden") or []:
        checks[f"forbidden:{pattern}"] = re.search(pattern, text, re.DOTALL) is None
    if p.get("json"):
        checks["json"] = _parses_as_json(text)
    if p.get("final_without_tool_calls", True):
        last = (ctx.steps[-1].get("response") or {}) if ctx.steps else {}
        checks["final_without_tool_calls"] = bool(text.strip()) and not last.get("tool_calls")
    if not checks:
        return RewardResult.abstain("no checks configured")
    passed = sum(checks.values())
    if p.get("mode", "all") == "fraction":
        return RewardResult(passed / len(checks), {"checks": checks})
    return RewardResult(1.0 if passed == len(checks) else 0.0, {"checks": checks})


def _parses_as_json(text: str) -> bool:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _check_length(params: Mapping[str, Any]) -> None:
    max_tokens = params.get("max_tokens")
    target = params.get("target_tokens", 0)
    if not isinstance(max_tokens, int | float) or not isinstance(target, int | float):
        raise RewardConfigError("length_penalty needs numeric 'max_tokens' (and optional 'target_tokens')")
    if max_tokens <= target:
        raise RewardConfigError("length_penalty: 'max_tokens' must be greater than 'target_tokens'")


def response_tokens(step: JSON) -> int:
    """Tokens the model produced in a step: ``len(response_ids)``, else ``usage.completion_tokens``."""
    ids = step.get("response_ids")
    if ids is not None and (len(ids) > 0 or step.get("token_source") != "text"):
        return len(ids)
    usage = step.get("usage") or {}
    return int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)


def length_penalty(ctx: RewardContext) -> RewardResult:
    """0 while tokens ≤ target; ``-coefficient * (n - target) / (max - target)`` after, floored at
    ``-coefficient`` (the overlong penalty of DAPO when target = max - buffer)."""
    p = ctx.params
    _check_length(p)
    steps = ctx.steps[-1:] if p.get("scope") == "last_step" else ctx.steps
    n = sum(response_tokens(s) for s in steps)
    target, max_tokens = float(p.get("target_tokens", 0)), float(p["max_tokens"])
    coefficient = float(p.get("coefficient", 1.0))
    over = min(1.0, max(0.0, (n - target) / (max_tokens - target)))
    return RewardResult(-coefficient * over, {"tokens": n})


_ERROR_RE = re.compile(r"^\s*(?:error|exception|traceback|failed|fatal)\b|\btraceback \(most recent", re.I)


def _tool_results(steps: Sequence[JSON]) -> dict[str, tuple[str, bool]]:
    """tool_call_id → (result text, flagged as error) from every step's request messages."""
    found: dict[str, tuple[str, bool]] = {}
    for step in steps:
        for msg in step.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            if msg.get("role") == "tool" and msg.get("tool_call_id"):
                found[str(msg["tool_call_id"])] = (content_text(msg.get("content")), False)
            if isinstance(msg.get("content"), list):
                for block in msg["content"]:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        text = content_text(block.get("content"))
                        found[str(block.get("tool_use_id"))] = (text, bool(block.get("is_error")))
    return found


def _looks_like_error(text: str, flagged: bool) -> bool:
    if flagged or _ERROR_RE.search(text):
        return True
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, dict) and bool(parsed.get("error"))


def _arguments_ok(call: JSON) -> bool:
    fn: JSON = call["function"] if isinstance(call.get("function"), dict) else call
    args = fn.get("arguments", fn.get("input"))
    if isinstance(args, dict):
        return True
    if not isinstance(args, str):
        return False
    try:
        return isinstance(json.loads(args or "{}"), dict)
    except ValueError:
        return False


def tool_call_success(ctx: RewardContext) -> RewardResult:
    """Fraction of tool calls whose arguments are a JSON object and whose result is not an error.
    A call without a recorded result (the trajectory ended) counts as successful if its arguments parse."""
    results = _tool_results(ctx.steps)
    total, good, failures = 0, 0, []
    for step in ctx.steps:
        for call in (step.get("response") or {}).get("tool_calls") or []:
            total += 1
            result = results.get(str(call.get("id")))
            ok = _arguments_ok(call) and not (result is not None and _looks_like_error(*result))
            good += ok
            if not ok:
                failures.append(call.get("id"))
    if total == 0:
        value = ctx.params.get("no_calls_value")
        if value is None:
            return RewardResult.abstain("no tool calls")
        return RewardResult(float(value), {"calls": 0})
    return RewardResult(good / total, {"calls": total, "succeeded": good, "failed_ids": failures})


_THUMBS = {"up": 1.0, "down": -1.0, "+1": 1.0, "-1": -1.0, "yes": 1.0, "no": -1.0, "good": 1.0, "bad": -1.0}


def _feedback_signal(record: JSON, ctx: RewardContext) -> float | None:
    kind, value = record.get("kind"), record.get("value")
    if kind == "thumbs":
        if isinstance(value, bool):
            return 1.0 if value else -1.0
        if isinstance(value, int | float):
            return 1.0 if value > 0 else -1.0
        return _THUMBS.get(str(value).strip().lower())
    if kind == "rating" and isinstance(value, int | float) and not isinstance(value, bool):
        low, high = float(ctx.params.get("rating_min", 1)), float(ctx.params.get("rating_max", 5))
        clipped = min(high, max(low, float(value)))
        return 2.0 * (clipped - low) / (high - low) - 1.0
    if kind == "correction" and value is not None:
        found = extract_answer(final_text(ctx.steps))
        if found is None:
            return -1.0
        return 1.0 if answers_match(found.text, value)[0] else -1.0
    return None


def human_feedback(ctx: RewardContext) -> RewardResult:
    """Human feedback as a component: mean of thumbs (±1), ratings scaled to [-1, 1] and corrections
    (+1 when the final answer already equals the corrected one, else -1). Abstains without feedback."""
    kinds = set(ctx.params.get("kinds") or ["thumbs", "rating", "correction"])
    signals = []
    for record in ctx.feedback:
        if record.get("kind") in kinds:
            signal = _feedback_signal(record, ctx)
            if signal is not None:
                signals.append(signal)
    if not signals:
        return RewardResult.abstain("no usable feedback")
    return RewardResult(sum(signals) / len(signals), {"signals": len(signals)})


def builtin_rewards() -> dict[str, FunctionReward]:
    """Fresh instances of every built-in, keyed by registry name."""
    checks = {"regex_match": _check_regex, "length_penalty": _check_length}
    fns = [
        final_answer,
        exact_match,
        regex_match,
        format_check,
        length_penalty,
        tool_call_success,
        human_feedback,
    ]
    return {
        fn.__name__: FunctionReward(fn, version="1", in_thread=False, check_params=checks.get(fn.__name__))
        for fn in fns
    }
