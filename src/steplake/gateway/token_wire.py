"""The agent's protocol on the token path: the token path builds an OpenAI chat answer (whole, or as chat
chunks) from the parsed completion, and a wire puts it into the protocol the agent called with: OpenAI
chat as it is, or an Anthropic Message (whole, or as Anthropic stream events through the same translator
the chat path uses). Tool-call ids are made once, with the wire's prefix (``call_`` / ``toolu_``), so the
ids the agent sends back are the ids stored."""

from __future__ import annotations

from typing import Protocol

import orjson

from ..errors import CaptureFailedError
from ..types import Json
from ..upstreams.base import UpstreamFailure
from .anthropic_wire import StreamTranslator, answer_to_anthropic, assistant_blocks_to_chat, event
from .http import upstream_error_body
from .tokens import ChoiceAcc


class Wire(Protocol):
    call_prefix: str

    def whole(self, out: Json, chats: list[ChoiceAcc]) -> Json:
        """The whole answer, from the OpenAI chat completion built on the token path."""
        ...

    def history_message(self, msg: Json) -> Json:
        """The assistant turn as the agent will send it back, in chat form (for the exchange hash)."""
        ...

    def chunk(self, chunk: Json) -> list[bytes]: ...

    def finished(self, c: ChoiceAcc) -> None:
        """A choice finished (after its finish chunk went through ``chunk``)."""
        ...

    def end(self) -> list[bytes]: ...

    def upstream_error(self, e: UpstreamFailure) -> bytes: ...

    def capture_error(self, e: CaptureFailedError) -> bytes: ...


def sse(data: Json) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class OpenAIWire:
    call_prefix = "call_"

    def whole(self, out: Json, chats: list[ChoiceAcc]) -> Json:
        return out

    def history_message(self, msg: Json) -> Json:
        return msg

    def chunk(self, chunk: Json) -> list[bytes]:
        return [sse(chunk)]

    def finished(self, c: ChoiceAcc) -> None:
        return None

    def end(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]

    def upstream_error(self, e: UpstreamFailure) -> bytes:
        return sse(upstream_error_body("openai", e))

    def capture_error(self, e: CaptureFailedError) -> bytes:
        return sse(e.to_openai())


class AnthropicWire:
    """One choice (Anthropic has no ``n``); ``body`` is the agent's ``/v1/messages`` request; ``prompt_ids``
    (the token path) give ``message_start`` its input tokens when the chunks do not carry them."""

    call_prefix = "toolu_"

    def __init__(self, body: Json, prompt_ids: list[int] | None = None) -> None:
        self.body = body
        self.prompt_ids = prompt_ids
        self.tr = StreamTranslator(body)

    def whole(self, out: Json, chats: list[ChoiceAcc]) -> Json:
        for ch, c in zip(out["choices"], chats, strict=True):
            ch["stop_reason"] = c.stop_reason
        return answer_to_anthropic(out, self.body)

    def history_message(self, msg: Json) -> Json:
        blocks = answer_to_anthropic({"choices": [{"message": msg}]}, self.body)["content"]
        return assistant_blocks_to_chat(blocks)

    def chunk(self, chunk: Json) -> list[bytes]:
        if not self.tr.started and self.prompt_ids is not None:
            chunk = {**chunk, "prompt_token_ids": self.prompt_ids}  # message_start's input_tokens
        return self.tr.chunk(chunk)

    def finished(self, c: ChoiceAcc) -> None:
        if c.index == 0:
            self.tr.stop_reason = c.stop_reason

    def end(self) -> list[bytes]:
        head = [] if self.tr.started else self.chunk({})
        return head + self.tr.finish_events()

    def upstream_error(self, e: UpstreamFailure) -> bytes:
        return event("error", upstream_error_body("anthropic", e))

    def capture_error(self, e: CaptureFailedError) -> bytes:
        return event("error", e.to_anthropic())


__all__ = ["Wire", "OpenAIWire", "AnthropicWire", "sse"]
