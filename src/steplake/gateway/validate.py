"""Request checks: a malformed request gets a 400 in the agent's protocol before any upstream call."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..errors import BadRequestError
from ..records import ID_RE, MAX_JSON_DEPTH, NAME_RE, json_problem
from ..types import Json

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MAX_MODEL = 256  # Step.model


def _bad(msg: str, param: str | None = None) -> BadRequestError:
    return BadRequestError(msg, code="invalid_value" if param else "bad_request",
                           details={"param": param} if param else None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_depth(body: Json) -> None:
    """Objects and arrays nested at most MAX_JSON_DEPTH deep: what a step can store (and orjson can write)."""
    problem = json_problem(body, max_depth=MAX_JSON_DEPTH)
    if problem:
        raise _bad(f"request body is {problem}")


def check_model(model: Any, required: bool = False) -> None:
    """A model name the step can record: a string of at most 256 characters, no NUL."""
    if model is None and not required:
        return
    if not isinstance(model, str):
        raise _bad("'model' is required and must be a string" if required else "'model' must be a string", "model")
    if "\x00" in model or len(model) > MAX_MODEL:
        raise _bad(f"'model' must not contain a NUL character (\\u0000) nor be longer than {MAX_MODEL} characters",
                   "model")


def check_metadata(meta: Any, what: str) -> None:
    """Metadata a trajectory can store: an object at most MAX_JSON_DEPTH deep with no NUL in keys or strings."""
    if not isinstance(meta, dict):
        raise _bad(f"{what} must be a JSON object", "metadata")
    problem = json_problem(meta, allow_nul=False)
    if problem:
        raise _bad(f"{what}: {problem}", "metadata")


def check_channel(channel: Any, what: str = "'channel'") -> None:
    if channel is not None and (not isinstance(channel, str) or not NAME_RE.match(channel)):
        raise _bad(f"{what} {channel!r} is not a valid channel name (1-64 chars: letters, digits, . _ : -)",
                   "channel")


def check_choice_ids(trajectory_id: str, n: Any) -> None:
    """Choice i > 0 of a call is recorded in trajectory ``{id}-{i}``, which must be a valid id too."""
    if isinstance(n, int) and not isinstance(n, bool) and n > 1 and not ID_RE.match(f"{trajectory_id}-{n - 1}"):
        raise _bad(f"n={n}: choice {n - 1} would be recorded in trajectory '{trajectory_id}-{n - 1}', longer "
                   "than the 128 characters an id may have; use a shorter trajectory id", "n")


def check_common(body: Json) -> None:
    check_depth(body)
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
    check_model(body.get("model"))
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
# content blocks the chat translation carries (anthropic_wire.py); any other block is refused, never dropped
USER_BLOCKS = ("text", "image", "document", "tool_result")
ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")
NESTED_BLOCKS = ("text", "image", "document")  # inside a tool_result or a ``content`` document
THINKING_TYPES = ("enabled", "disabled", "adaptive")


def check_anthropic(body: Json) -> None:
    check_depth(body)
    check_model(body.get("model"), required=True)
    if not _is_int(body.get("max_tokens")) or body["max_tokens"] < 1:
        raise _bad("'max_tokens' is required and must be a positive integer", "max_tokens")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' is required and must be a non-empty array", "messages")
    for i, m in enumerate(msgs):
        _check_anthropic_message(m, i)
    sysp = body.get("system")
    if sysp is not None and not isinstance(sysp, str) and not (isinstance(sysp, list) and all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in sysp)):
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
    _check_thinking(body.get("thinking"))


def _check_thinking(th: Any) -> None:
    if th is None:
        return
    if not isinstance(th, dict) or th.get("type") not in THINKING_TYPES:
        raise _bad("'thinking' must be {'type': 'enabled', 'budget_tokens': N}, {'type': 'disabled'} or "
                   "{'type': 'adaptive'}", "thinking")
    if th["type"] == "enabled" and (not _is_int(th.get("budget_tokens")) or th["budget_tokens"] < 1):
        raise _bad("thinking.budget_tokens: a positive integer is required when thinking is enabled", "thinking")


def _check_anthropic_message(m: Any, i: int) -> None:
    if not isinstance(m, dict):
        raise _bad(f"messages.{i} must be an object", "messages")
    role = m.get("role")
    if role not in ANTHROPIC_ROLES:
        raise _bad(f"messages.{i}.role must be 'user' or 'assistant', got {role!r}", "messages")
    c = m.get("content")
    if not isinstance(c, str | list) or (isinstance(c, list) and not all(isinstance(b, dict) for b in c)):
        raise _bad(f"messages.{i}.content must be a string or an array of content blocks", "messages")
    if isinstance(c, list):
        allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
        for j, b in enumerate(c):
            _check_block(b, f"messages.{i}.content.{j}", allowed, f"a {role} message")


def _need_str(d: Json, key: str, where: str, what: str = "a string") -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise _bad(f"{where}.{key}: field required ({what})", "messages")
    return v


def _check_block(b: Json, where: str, allowed: tuple[str, ...], place: str) -> None:
    kind = b.get("type")
    if kind not in allowed:
        raise _bad(f"{where}: content block type {kind!r} is not supported in {place} "
                   f"(supported: {', '.join(allowed)})", "messages")
    if kind == "text" and not isinstance(b.get("text"), str):
        raise _bad(f"{where}.text: field required (a string)", "messages")
    elif kind == "image":
        _check_image(b, where)
    elif kind == "document":
        _check_document(b, where)
    elif kind == "tool_result":
        _need_str(b, "tool_use_id", where)
        c = b.get("content")
        if isinstance(c, list):
            for k, x in enumerate(c):
                if not isinstance(x, dict):
                    raise _bad(f"{where}.content.{k} must be a content block object", "messages")
                _check_block(x, f"{where}.content.{k}", NESTED_BLOCKS, "a tool_result")
        elif c is not None and not isinstance(c, str):
            raise _bad(f"{where}.content must be a string or an array of content blocks", "messages")
    elif kind == "tool_use":
        _need_str(b, "name", where)
        if b.get("input") is not None and not isinstance(b["input"], dict):
            raise _bad(f"{where}.input must be an object", "messages")
    elif kind == "thinking" and not isinstance(b.get("thinking"), str):
        raise _bad(f"{where}.thinking: field required (a string)", "messages")


def _source(b: Json, where: str) -> Json:
    src = b.get("source")
    if not isinstance(src, dict):
        raise _bad(f"{where}.source: field required (an object)", "messages")
    return src


def _check_image(b: Json, where: str) -> None:
    src = _source(b, where)
    kind = src.get("type")
    if kind == "base64":
        mt = _need_str(src, "media_type", f"{where}.source", "an image media type such as 'image/png'")
        if not mt.startswith("image/"):
            raise _bad(f"{where}.source.media_type must be an image media type such as 'image/png', got {mt!r}",
                       "messages")
        data = _need_str(src, "data", f"{where}.source", "base64-encoded image data")
        try:
            base64.b64decode("".join(data.split()), validate=True)  # line breaks are fine, other junk is not
        except (binascii.Error, ValueError):
            raise _bad(f"{where}.source.data is not valid base64 (send the bare base64 text, not a data: URL)",
                       "messages") from None
    elif kind == "url":
        url = _need_str(src, "url", f"{where}.source", "an http(s) URL")
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{where}.source.url must be an http(s) URL", "messages")
    else:
        raise _bad(f"{where}.source.type must be 'base64' or 'url', got {kind!r} (file references are not "
                   "supported by this gateway)", "messages")


def _check_document(b: Json, where: str) -> None:
    src = _source(b, where)
    kind = src.get("type")
    for k in ("title", "context"):
        if b.get(k) is not None and not isinstance(b[k], str):
            raise _bad(f"{where}.{k} must be a string", "messages")
    if kind == "text":
        if not isinstance(src.get("data"), str):
            raise _bad(f"{where}.source.data: field required (the document text)", "messages")
    elif kind == "content":
        c = src.get("content")
        if isinstance(c, list) and all(isinstance(x, dict) for x in c):
            for j, x in enumerate(c):
                _check_block(x, f"{where}.source.content.{j}", ("text", "image"), "a content document")
        elif not isinstance(c, str):
            raise _bad(f"{where}.source.content: field required (a string or an array of text/image blocks)",
                       "messages")
    elif kind in ("base64", "url"):
        raise _bad(f"{where}: PDF documents are not supported: the upstream is asked in chat-completions form, "
                   "which has no PDF input. Send the document's text as a 'text' document or text block.",
                   "messages")
    else:
        raise _bad(f"{where}.source.type must be 'text' or 'content', got {kind!r} (PDF and file sources are "
                   "not supported by this gateway)", "messages")


__all__ = ["check_chat", "check_completion", "check_anthropic", "check_message", "check_depth", "check_model",
           "check_metadata", "check_channel", "check_choice_ids", "CHAT_ROLES"]
