"""Request checks: a malformed request gets a 400 in the agent's protocol before any upstream call."""

from __future__ import annotations

from typing import Any

from ..errors import BadRequestError

Json = dict[str, Any]
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _bad(msg: str, param: str | None = None) -> BadRequestError:
    return BadRequestError(msg, code="invalid_value" if param else "bad_request",
                           details={"param": param} if param else None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_common(body: Json) -> None:
    for k in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repetition_penalty"):
        if body.get(k) is not None and not _is_num(body[k]):
            raise _bad(f"'{k}' must be a number", k)
    for k in ("max_tokens", "max_completion_tokens", "n", "seed", "top_k", "top_logprobs"):
        if body.get(k) is not None and not _is_int(body[k]):
            raise _bad(f"'{k}' must be an integer", k)
    for k in ("max_tokens", "max_completion_tokens", "n"):
        if body.get(k) is not None and body[k] < 1:
            raise _bad(f"'{k}' must be at least 1", k)
    if body.get("n") is not None and body["n"] > 128:
        raise _bad("'n' must be at most 128", "n")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise _bad("'model' must be a string", "model")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or a list of strings", "stop")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("'stream_options' must be an object", "stream_options")


def check_chat(body: Json) -> None:
    msgs = body.get("messages")
    if msgs is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(msgs):
        check_message(m, i)
    check_common(body)
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise _bad("'logprobs' must be a boolean", "logprobs")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array", "tools")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}", "tools")
    tc = body.get("tool_choice")
    if tc is not None and not isinstance(tc, str | dict):
        raise _bad("'tool_choice' must be a string or an object", "tool_choice")


def check_message(m: Any, i: int) -> None:
    if not isinstance(m, dict):
        raise _bad(f"messages[{i}] must be an object", "messages")
    role = m.get("role")
    if not isinstance(role, str) or role not in CHAT_ROLES:
        raise _bad(f"messages[{i}].role must be one of {sorted(CHAT_ROLES)}, got {role!r}", "messages")
    content = m.get("content")
    if content is not None and not isinstance(content, str | list):
        raise _bad(f"messages[{i}].content must be a string or an array of parts", "messages")
    if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
        raise _bad(f"messages[{i}].content parts must be objects", "messages")
    if content is None and role not in ("assistant",):
        raise _bad(f"messages[{i}].content is required for role {role!r}", "messages")
    tcs = m.get("tool_calls")
    if tcs is not None and not (isinstance(tcs, list) and all(isinstance(t, dict) for t in tcs)):
        raise _bad(f"messages[{i}].tool_calls must be an array of objects", "messages")


def check_completion(body: Json) -> None:
    p = body.get("prompt")
    ok = isinstance(p, str) or (isinstance(p, list) and p and (
        all(isinstance(x, str) for x in p) or all(_is_int(x) for x in p)
        or all(isinstance(x, list) and x and all(_is_int(y) for y in x) for x in p)))
    if not ok:
        raise _bad("'prompt' must be a string, an array of strings, an array of token ids or an array of "
                   "arrays of token ids", "prompt")
    check_common(body)
    lp = body.get("logprobs")
    if lp is not None and (not _is_int(lp) or lp < 0):
        raise _bad("'logprobs' must be a non-negative integer", "logprobs")


ANTHROPIC_ROLES = {"user", "assistant"}


def check_anthropic(body: Json) -> None:
    if not isinstance(body.get("model"), str):
        raise _bad("'model' is required and must be a string", "model")
    if not _is_int(body.get("max_tokens")) or body["max_tokens"] < 1:
        raise _bad("'max_tokens' is required and must be a positive integer", "max_tokens")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' is required and must be a non-empty array", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i} must be an object", "messages")
        if m.get("role") not in ANTHROPIC_ROLES:
            raise _bad(f"messages.{i}.role must be 'user' or 'assistant', got {m.get('role')!r}", "messages")
        c = m.get("content")
        if not isinstance(c, str | list) or (isinstance(c, list) and not all(isinstance(b, dict) for b in c)):
            raise _bad(f"messages.{i}.content must be a string or an array of content blocks", "messages")
    sysp = body.get("system")
    if sysp is not None and not isinstance(sysp, str | list):
        raise _bad("'system' must be a string or an array of text blocks", "system")
    for k in ("temperature", "top_p"):
        if body.get(k) is not None and not _is_num(body[k]):
            raise _bad(f"'{k}' must be a number", k)
    if body.get("top_k") is not None and not _is_int(body["top_k"]):
        raise _bad("'top_k' must be an integer", "top_k")
    ss = body.get("stop_sequences")
    if ss is not None and not (isinstance(ss, list) and all(isinstance(s, str) for s in ss)):
        raise _bad("'stop_sequences' must be an array of strings", "stop_sequences")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)):
        raise _bad("'tools' must be an array of {name, description?, input_schema}", "tools")


__all__ = ["check_chat", "check_completion", "check_anthropic", "check_message", "CHAT_ROLES"]
