"""The shape of an upstream answer, checked before anything reads it.

Valid JSON of the wrong shape (``choices[0].message`` a string, a tool call's ``function`` a string, a
streamed ``delta`` that is a list, a ``model`` the pool cannot store) is the upstream's fault: the agent gets
a 502 (or the stream's error event), never a 500 or a cut stream, and the exchange claim of the call is
released by the caller so that a retry of the same continuation still joins its trajectory.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..records import MAX_JSON_DEPTH, json_problem
from ..types import Json
from ..upstreams.base import UpstreamFailure

MAX_MODEL = 256  # Step.model
MAX_FINISH_REASON = 64  # Step.finish_reason


class _Shape(Exception):
    pass


def _is(value: Any, types: tuple[type, ...], where: str, what: str) -> None:
    if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
        raise _Shape(f"{where} is {_name(value)}, not {what}")


def _name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _text(value: Any, where: str, limit: int) -> None:
    _is(value, (str,), where, "a string")
    if isinstance(value, str) and ("\x00" in value or len(value) > limit):
        raise _Shape(f"{where} holds a NUL character or is longer than {limit} characters")


def _storable(value: Any, where: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """What a step stores of the answer (usage; tool calls, inside ``response``) nests within the limit."""
    problem = json_problem(value, max_depth=max_depth)
    if problem:
        raise _Shape(f"{where} is {problem}")


def _tool_calls(calls: Any, where: str, streamed: bool) -> None:
    _is(calls, (list,), where, "an array")
    _storable(calls, where, MAX_JSON_DEPTH - 1)
    for i, tc in enumerate(calls or []):
        at = f"{where}[{i}]"
        _is(tc, (dict,), at, "an object")
        if tc is None:
            continue
        _is(tc.get("index"), (int,), f"{at}.index", "an integer")
        _is(tc.get("id"), (str,), f"{at}.id", "a string")
        fn = tc.get("function")
        _is(fn, (dict,), f"{at}.function", "an object")
        if fn:
            _is(fn.get("name"), (str,), f"{at}.function.name", "a string")
            args_types: tuple[type, ...] = (str,) if streamed else (str, dict)
            _is(fn.get("arguments"), args_types, f"{at}.function.arguments", "a string")


def _message(msg: Any, where: str, streamed: bool) -> None:
    _is(msg, (dict,), where, "an object")
    if not msg:
        return
    _is(msg.get("content"), (str,), f"{where}.content", "a string")
    for k in ("reasoning_content", "reasoning", "role"):
        _is(msg.get(k), (str,), f"{where}.{k}", "a string")
    _tool_calls(msg.get("tool_calls"), f"{where}.tool_calls", streamed)


def _logprobs(lp: Any, where: str) -> None:
    _is(lp, (dict,), where, "an object")
    if not lp:
        return
    content = lp.get("content")
    _is(content, (list,), f"{where}.content", "an array")
    for i, e in enumerate(content or []):
        _is(e, (dict,), f"{where}.content[{i}]", "an object")
    _is(lp.get("token_logprobs"), (list,), f"{where}.token_logprobs", "an array")


def _choice(ch: Any, where: str) -> None:
    _is(ch, (dict,), where, "an object")
    if ch is None:
        raise _Shape(f"{where} is null, not an object")
    _is(ch.get("index"), (int,), f"{where}.index", "an integer")
    _message(ch.get("message"), f"{where}.message", streamed=False)
    _message(ch.get("delta"), f"{where}.delta", streamed=True)
    _is(ch.get("text"), (str,), f"{where}.text", "a string")
    _text(ch.get("finish_reason"), f"{where}.finish_reason", MAX_FINISH_REASON)
    _logprobs(ch.get("logprobs"), f"{where}.logprobs")


def check_answer(data: Json) -> Json:
    """``data`` (a whole answer or one streamed chunk, chat or completions) as it is, or UpstreamFailure(502)
    naming the first field of the wrong shape."""
    try:
        choices = data.get("choices")
        _is(choices, (list,), "choices", "an array")
        for i, ch in enumerate(choices or []):
            _choice(ch, f"choices[{i}]")
        _is(data.get("usage"), (dict,), "usage", "an object")
        _storable(data.get("usage"), "usage")
        _text(data.get("model"), "model", MAX_MODEL)
    except _Shape as e:
        raise UpstreamFailure(502, f"upstream answered JSON of the wrong shape: {e}") from None
    return data


def stream_payload(payload: bytes) -> Json:
    """One streamed chunk's JSON object: undecodable, not an object, or an error event without choices → 502."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(502, "upstream sent an invalid stream chunk") from None
    if not isinstance(data, dict):
        raise UpstreamFailure(502, "upstream sent an invalid stream chunk")
    err = data.get("error")
    if err is not None and not data.get("choices"):
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamFailure(502, f"upstream failed mid-stream: {msg}", body=None)
    return data


def stream_chunk(payload: bytes) -> Json:
    """A streamed chat/completions chunk, checked like a whole answer (:func:`check_answer`)."""
    return check_answer(stream_payload(payload))


__all__ = ["check_answer", "stream_payload", "stream_chunk"]
