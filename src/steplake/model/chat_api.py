"""``POST /v1/chat/completions``: OpenAI chat with vLLM's token-id extensions, streaming and tools.

With ``return_token_ids: true`` the response carries top-level ``prompt_token_ids`` and per-choice
``token_ids`` (streaming: ``prompt_token_ids`` in the first chunk only, each chunk's choice its delta
``token_ids``; every sampled id is in exactly one chunk, also when its text was held back or became a
tool call). ``finish_reason`` is ``tool_calls`` when calls were parsed, except for a ``tool_choice``
naming a function (``stop``, as OpenAI does).

``prompt_logprobs: k`` (vLLM extension) puts top-level ``prompt_logprobs`` on a non-streamed answer: the
rendered prompt's tokens scored in one forward pass, in the shape ``completions_api`` describes (``null``
when not asked for); a stream refuses k > 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from ..errors import BadRequestError
from .chat import normalize_tools
from .decoding import FREE_PLAN, Forced, Generation, JsonValue, Segment, TokenPiece
from .protocol import ChatRequest, sampling_params
from .sampling import SamplingParams
from .serving import (
    SSE_DONE,
    ServerState,
    chat_logprob,
    compute_prompt_logprobs,
    generate_many,
    new_id,
    now,
    sse,
    stream_error,
    stream_pieces,
    usage,
)
from .tools import StreamEvent, ToolCallStreamer, forced_tool_plan, parse_tool_calls


@dataclass
class ChatJob:
    """A validated chat request, ready to run."""

    req: ChatRequest
    prompt_ids: list[int]
    params: list[SamplingParams]
    plan: tuple[Segment, ...]
    parse_tools: bool
    named_tool: bool
    id: str
    created: int
    model_name: str
    prompt_logprobs: int | None = None


def _format_plan(req: ChatRequest, eos: int) -> tuple[Segment, ...] | None:
    fmt = req.response_format
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return (JsonValue(None), Forced(ids=(eos,)))
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return (JsonValue(schema if isinstance(schema, dict) else None), Forced(ids=(eos,)))
    raise BadRequestError("response_format.type must be text, json_object or json_schema",
                          code="invalid_response_format")


async def prepare_chat(state: ServerState, req: ChatRequest) -> ChatJob:
    prompt_logprobs = req.wanted_prompt_logprobs()
    model = await state.ready()
    tools = normalize_tools(req.tools)
    prompt_ids = model.render_chat(req.messages, tools, req.tool_choice, req.add_generation_prompt,
                                   req.continue_final_message)
    max_tokens = state.max_tokens(prompt_ids, req.requested_max_tokens())
    top = (req.top_logprobs or 0) if req.logprobs else 0
    plan = forced_tool_plan(tools, req.tool_choice, model.end_of_turn_id)
    plan = plan or _format_plan(req, model.end_of_turn_id) or FREE_PLAN
    return ChatJob(req=req, prompt_ids=prompt_ids, params=[sampling_params(req, max_tokens, i, top)
                                                           for i in range(req.n)],
                   plan=plan, parse_tools=bool(tools) and req.tool_choice != "none",
                   named_tool=isinstance(req.tool_choice, dict), id=new_id("chatcmpl"), created=now(),
                   model_name=state.served_model_name, prompt_logprobs=prompt_logprobs)


def _finish(job: ChatJob, finish: str, has_calls: bool) -> str:
    if has_calls and finish == "stop" and not job.named_tool:
        return "tool_calls"
    return finish


def _logprobs(state: ServerState, job: ChatJob, ids: Sequence[int], lps: Sequence[float],
              tops: Sequence[Sequence[tuple[int, float]]]) -> dict[str, Any] | None:
    if not job.req.logprobs:
        return None
    as_ids = job.req.return_tokens_as_token_ids
    return {"content": [chat_logprob(state.model, t, lp, top, as_ids) for t, lp, top in zip(ids, lps, tops,
                                                                                              strict=True)]}


def _choice(state: ServerState, job: ChatJob, index: int, gen: Generation) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": gen.text}
    calls: list[dict[str, Any]] = []
    if job.parse_tools:
        parsed = parse_tool_calls(gen.text)
        calls = [c.to_openai() for c in parsed.tool_calls]
        message["content"] = parsed.content if calls else gen.text
    message["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": index, "message": message, "logprobs": _logprobs(state, job, gen.token_ids, gen.logprobs,
                                                                  gen.top_logprobs),
        "finish_reason": _finish(job, gen.finish_reason, bool(calls)), "stop_reason": gen.stop_reason,
    }
    if job.req.return_token_ids:
        choice["token_ids"] = gen.token_ids
    return choice


async def chat_response(state: ServerState, job: ChatJob) -> dict[str, Any]:
    scored = await compute_prompt_logprobs(state.model, job.prompt_ids, job.prompt_logprobs)
    gens = await generate_many(state.model, job.prompt_ids, job.params, job.plan)
    body: dict[str, Any] = {
        "id": job.id, "object": "chat.completion", "created": job.created, "model": job.model_name,
        "choices": [_choice(state, job, i, g) for i, g in enumerate(gens)],
        "usage": usage(len(job.prompt_ids), sum(len(g.token_ids) for g in gens)),
        "prompt_logprobs": scored,
    }
    if job.req.return_token_ids:
        body["prompt_token_ids"] = job.prompt_ids
    return body


class _ChunkWriter:
    """Builds the chunks of one choice; pending ids/logprobs ride on the next chunk sent."""

    def __init__(self, state: ServerState, job: ChatJob, index: int) -> None:
        self.state, self.job, self.index = state, job, index
        self.ids: list[int] = []
        self.lps: list[float] = []
        self.tops: list[Sequence[tuple[int, float]]] = []
        self.n_tokens = 0
        self.has_calls = False

    def add(self, piece: TokenPiece) -> None:
        self.ids.append(piece.token_id)
        self.lps.append(piece.logprob)
        self.tops.append(piece.top_logprobs)
        self.n_tokens += 1

    def chunk(self, delta: dict[str, Any], finish: str | None = None, stop_reason: Any = None,
              first: bool = False) -> bytes:
        choice: dict[str, Any] = {"index": self.index, "delta": delta,
                                  "logprobs": _logprobs(self.state, self.job, self.ids, self.lps, self.tops),
                                  "finish_reason": finish}
        if finish is not None:
            choice["stop_reason"] = stop_reason
        if self.job.req.return_token_ids:
            choice["token_ids"] = self.ids
        body: dict[str, Any] = {"id": self.job.id, "object": "chat.completion.chunk",
                                "created": self.job.created, "model": self.job.model_name, "choices": [choice]}
        if first and self.job.req.return_token_ids:
            body["prompt_token_ids"] = self.job.prompt_ids
        self.ids, self.lps, self.tops = [], [], []
        return sse(body)

    def events(self, events: list[StreamEvent]) -> list[bytes]:
        out = []
        for ev in events:
            if ev.kind == "content":
                out.append(self.chunk({"content": ev.text}))
            elif ev.call is not None:
                self.has_calls = True
                head = {"index": ev.index, "id": ev.call.id, "type": "function",
                        "function": {"name": ev.call.name, "arguments": ""}}
                out.append(self.chunk({"tool_calls": [head]}))
                out.append(self.chunk({"tool_calls": [{"index": ev.index,
                                                       "function": {"arguments": ev.call.arguments}}]}))
        return out


async def _choice_chunks(state: ServerState, job: ChatJob, index: int) -> AsyncIterator[tuple[bytes, int]]:
    writer = _ChunkWriter(state, job, index)
    yield writer.chunk({"role": "assistant", "content": ""}, first=index == 0), 0
    streamer = ToolCallStreamer() if job.parse_tools else None
    async for piece in stream_pieces(state.model, job.prompt_ids, job.params[index], job.plan):
        writer.add(piece)
        if streamer is not None:
            events = streamer.feed(piece.text)
            if piece.finish_reason is not None:
                events += streamer.finish()
        else:
            events = [StreamEvent("content", text=piece.text)] if piece.text else []
        for chunk in writer.events(events):
            yield chunk, 0
        if piece.finish_reason is not None:
            finish = _finish(job, piece.finish_reason, writer.has_calls)
            yield writer.chunk({}, finish, piece.stop_reason), writer.n_tokens


async def chat_stream(state: ServerState, job: ChatJob) -> AsyncIterator[bytes]:
    completion_tokens = 0
    try:
        for index in range(len(job.params)):
            async for chunk, n in _choice_chunks(state, job, index):
                completion_tokens += n
                yield chunk
        if job.req.include_usage:
            yield sse({"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                       "model": job.model_name, "choices": [],
                       "usage": usage(len(job.prompt_ids), completion_tokens)})
    except Exception as exc:  # headers are sent: report in-band
        yield stream_error(exc)
    yield SSE_DONE


async def chat_completions(state: ServerState, req: ChatRequest) -> dict[str, Any] | StreamingResponse:
    job = await prepare_chat(state, req)
    if req.stream:
        return StreamingResponse(chat_stream(state, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await chat_response(state, job)


__all__ = ["chat_completions", "prepare_chat", "chat_response", "chat_stream", "ChatJob"]
