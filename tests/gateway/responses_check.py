"""Strict checks of Responses API output against the openai SDK's own types (shared by the Responses tests)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
RESPONSE: TypeAdapter[Response] = TypeAdapter(Response)


def _no_extra(v: Any, where: str) -> None:
    if isinstance(v, BaseModel):
        assert not v.model_extra, f"{where}: fields the SDK's {type(v).__name__} does not define: {v.model_extra}"
        for name in type(v).model_fields:
            _no_extra(getattr(v, name), f"{where}.{name}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _no_extra(x, f"{where}[{i}]")
    elif isinstance(v, dict):
        for k, x in v.items():
            _no_extra(x, f"{where}.{k}")


def strict(adapter: TypeAdapter[Any], raw: dict[str, Any]) -> Any:
    """Validate ``raw`` as the SDK type: no field the type lacks (anywhere), and nothing coerced."""
    obj = adapter.validate_python(raw)
    _no_extra(obj, str(raw.get("type") or raw.get("object")))
    assert obj.model_dump(mode="json", exclude_unset=True, by_alias=True) == raw
    return obj


def sse_events(text: str) -> list[dict[str, Any]]:
    """``event:`` + ``data:`` pairs; the event name must equal the data's type."""
    out: list[dict[str, Any]] = []
    name = None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = orjson.loads(line[6:])
            assert name == data["type"], (name, data["type"])
            out.append(data)
            name = None
    return out


def check_stream(raw: list[dict[str, Any]], tools: list[Any] | None = None) -> Any:
    """Every event validates strictly, sequence numbers count 0, 1, ..., and the SDK's own accumulator takes
    the events in order; returns the final Response the accumulator built."""
    assert [e["sequence_number"] for e in raw] == list(range(len(raw)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools or openai.omit, text_format=openai.omit)
    for e in raw:
        state.handle_event(strict(EVENTS, e))
    assert raw[0]["type"] == "response.created" and raw[1]["type"] == "response.in_progress"
    assert raw[-1]["type"] in ("response.completed", "response.incomplete")
    return raw[-1]["response"]


async def stream_raw(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = await client.post(path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return sse_events(r.text)
