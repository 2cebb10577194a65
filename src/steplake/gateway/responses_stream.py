"""The Responses wire (``token_wire.Wire``): a chat completion (whole) or chat chunks (streamed) → the
Responses answer, on the chat path (``wire_chat.py``) and on the token path (``token_chat.py``) alike.

Stream events, each with its ``sequence_number`` (0, 1, ...), in the order OpenAI sends them and the
SDK's ``ResponseStream`` accumulator expects: ``response.created``, ``response.in_progress``; per output
item ``response.output_item.added`` → (``response.content_part.added`` → ``response.output_text.delta``
… → ``response.output_text.done`` → ``response.content_part.done``) or (``response.reasoning_text.*``) or
(``response.function_call_arguments.delta`` … → ``.done``) → ``response.output_item.done``; then
``response.completed`` (``response.incomplete`` when the answer was cut). A failure is one ``error``
event."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import CaptureFailedError, SteplakeError
from ..types import Json
from ..upstreams.base import UpstreamFailure
from .anthropic_wire import reasoning_of
from .http import upstream_error_body
from .responses_output import (
    INCOMPLETE,
    call_item,
    message_item,
    new_call_id,
    output_items,
    reasoning_item,
    response_object,
    text_part,
    usage_of,
)
from .tokens import ChoiceAcc


def sse_event(data: Json) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponsesWire:
    """One Responses call: ``rid`` is ``resp_`` + the step id, ``hexid`` names its output items."""

    call_prefix = "call_"

    def __init__(self, rid: str, hexid: str, created_at: int, model: str | None, echo: Json) -> None:
        self.rid, self.hexid, self.created_at, self.model, self.echo = rid, hexid, created_at, model, echo
        self.seq = 0
        self.started = False
        self.items: list[Json] = []  # output items in output_index order
        self.open: int | None = None  # the open message / reasoning item
        self.calls: dict[int, int] = {}  # chat tool-call index → output index
        self.finish: str | None = None
        self.usage: Json | None = None

    # whole ---------------------------------------------------------------------------------------------
    def whole(self, out: Json, chats: list[ChoiceAcc]) -> Json:
        c = chats[0] if chats else ChoiceAcc()
        for call in c.tool_calls.values():
            if not call.get("id"):
                call["id"] = new_call_id()  # made once: the id the agent sends back is the id stored
        reasoning = "".join(c.reasoning) or None
        items = output_items(self.hexid, c.text or None, reasoning, c.calls(), c.finish_reason)
        return response_object(self.rid, self.created_at, out.get("model") or self.model, self.echo, items,
                               c.finish_reason, usage_of(out.get("usage")))

    def history_message(self, msg: Json) -> Json:
        return msg

    # streamed --------------------------------------------------------------------------------------------
    def _ev(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse_event(data)

    def _start(self, model: Any) -> list[bytes]:
        self.started = True
        if isinstance(model, str) and model:
            self.model = model
        snap = self._snapshot([], None, "in_progress")
        return [self._ev("response.created", response=snap), self._ev("response.in_progress", response=snap)]

    def _snapshot(self, output: list[Json], usage: Json | None, status: str | None = None) -> Json:
        return response_object(self.rid, self.created_at, self.model, self.echo, output, self.finish, usage, status)

    def chunk(self, chunk: Json) -> list[bytes]:
        out = [] if self.started else self._start(chunk.get("model"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for ch in chunk.get("choices") or []:
            if not isinstance(ch, dict) or ch.get("index", 0) != 0:
                continue
            d = ch.get("delta") or {}
            r = reasoning_of(d)
            if r:
                out += self._reasoning(r)
            if isinstance(d.get("content"), str) and d["content"]:
                out += self._text(d["content"])
            for tc in d.get("tool_calls") or []:
                if isinstance(tc, dict):
                    out += self._call(tc)
            if ch.get("finish_reason"):
                self.finish = ch["finish_reason"]
        return out

    def _add(self, item: Json) -> list[bytes]:
        self.items.append(item)
        return [self._ev("response.output_item.added", output_index=len(self.items) - 1, item=dict(item))]

    def _reasoning(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.items[self.open]["type"] != "reasoning":
            out += self._close_open()
            out += self._add(reasoning_item(self._hex("rs_"), "", "in_progress"))
            self.open = len(self.items) - 1
            item = self.items[self.open]
            item["_text"] = ""
            out.append(self._ev("response.content_part.added", item_id=item["id"], output_index=self.open,
                                content_index=0, part={"type": "reasoning_text", "text": ""}))
        item = self.items[self.open]
        item["_text"] += text
        out.append(self._ev("response.reasoning_text.delta", item_id=item["id"], output_index=self.open,
                            content_index=0, delta=text))
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.items[self.open]["type"] != "message":
            out += self._close_open()
            out += self._add(message_item(self._hex("msg_"), None, "in_progress"))
            self.open = len(self.items) - 1
            item = self.items[self.open]
            item["_text"] = ""
            out.append(self._ev("response.content_part.added", item_id=item["id"], output_index=self.open,
                                content_index=0, part=text_part("")))
        item = self.items[self.open]
        item["_text"] += text
        out.append(self._ev("response.output_text.delta", item_id=item["id"], output_index=self.open,
                            content_index=0, delta=text, logprobs=[]))
        return out

    def _hex(self, prefix: str) -> str:
        """The item's id suffix: the step's hex, numbered when the stream holds a second item of a kind."""
        n = sum(1 for it in self.items if str(it["id"]).startswith(prefix))
        return self.hexid if n == 0 else f"{self.hexid}_{n}"

    def _call(self, tc: Json) -> list[bytes]:
        out: list[bytes] = []
        ti = tc.get("index", len(self.calls))
        fn = tc.get("function") or {}
        if ti not in self.calls:
            out += self._close_open()
            call = {"id": tc.get("id") or new_call_id(), "function": {"name": fn.get("name"), "arguments": ""}}
            out += self._add(call_item(self.hexid, len(self.calls), call, "in_progress"))
            self.calls[ti] = len(self.items) - 1
        k = self.calls[ti]
        if isinstance(fn.get("arguments"), str) and fn["arguments"]:
            self.items[k]["arguments"] += fn["arguments"]
            out.append(self._ev("response.function_call_arguments.delta", item_id=self.items[k]["id"],
                                output_index=k, delta=fn["arguments"]))
        return out

    def _close_open(self) -> list[bytes]:
        k, self.open = self.open, None
        if k is None:
            return []
        item = self.items[k]
        text = item.pop("_text")
        common: Json = {"item_id": item["id"], "output_index": k, "content_index": 0}
        if item["type"] == "reasoning":
            done = reasoning_item(item["id"].removeprefix("rs_"), text)
            out = [self._ev("response.reasoning_text.done", **common, text=text),
                   self._ev("response.content_part.done", **common, part={"type": "reasoning_text", "text": text})]
        else:
            status = "incomplete" if self.finish in INCOMPLETE and not self.calls else "completed"
            done = message_item(item["id"].removeprefix("msg_"), text, status)
            out = [self._ev("response.output_text.done", **common, text=text, logprobs=[]),
                   self._ev("response.content_part.done", **common, part=text_part(text))]
        self.items[k] = done
        return [*out, self._ev("response.output_item.done", output_index=k, item=done)]

    def finished(self, c: ChoiceAcc) -> None:
        """The ids of tool calls the upstream streamed without one: the ids the agent got."""
        if c.index != 0:
            return
        for ti, k in self.calls.items():
            call = c.tool_calls.get(ti)
            if call is not None and not call.get("id"):
                call["id"] = self.items[k]["call_id"]

    def end(self) -> list[bytes]:
        out = [] if self.started else self._start(None)
        out += self._close_open()
        if not any(it["type"] in ("message", "function_call") for it in self.items):
            out += self._empty_message()
        status = "incomplete" if self.finish in INCOMPLETE else "completed"
        for k in sorted(self.calls.values()):
            item = {**self.items[k], "status": status}
            self.items[k] = item
            out.append(self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=k,
                                arguments=item["arguments"]))
            out.append(self._ev("response.output_item.done", output_index=k, item=item))
        final = self._snapshot(self.items, usage_of(self.usage))
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return [*out, self._ev(kind, response=final)]

    def _empty_message(self) -> list[bytes]:
        out = self._add(message_item(self._hex("msg_"), None, "in_progress"))
        self.open = len(self.items) - 1
        item = self.items[self.open]
        item["_text"] = ""
        out.append(self._ev("response.content_part.added", item_id=item["id"], output_index=self.open,
                            content_index=0, part=text_part("")))
        return out + self._close_open()

    def error(self, message: str, code: Any) -> bytes:
        return self._ev("error", code=str(code) if code is not None else None, message=message, param=None)

    def upstream_error(self, e: UpstreamFailure) -> bytes:
        err = upstream_error_body("openai", e).get("error") or {}
        return self.error(str(err.get("message") or e.message), err.get("code") or e.code)

    def capture_error(self, e: CaptureFailedError) -> bytes:
        return self.steplake_error(e)

    def steplake_error(self, e: SteplakeError) -> bytes:
        return self.error(e.message, e.code)


__all__ = ["ResponsesWire", "sse_event"]
