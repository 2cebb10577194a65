"""``POST /v1/completions``: text or token-id prompts (one or a batch), vLLM's token-id fields.

Each choice carries ``prompt_token_ids`` and ``token_ids`` when ``return_token_ids`` is true (streaming:
``prompt_token_ids`` on the first chunk of each choice, ``token_ids`` deltas on every chunk). Choice
``index`` is ``prompt_index * n + i``. ``logprobs: k`` gives the legacy shape (``tokens``,
``token_logprobs``, ``top_logprobs``, ``text_offset``). ``echo`` and ``suffix`` are not supported (400).
``tools`` + ``tool_choice`` (a steplake extension, as on the chat route) force a call on a token prompt that
already describes the tools: ``tool_choice`` naming a function or ``"required"`` constrains the decoding to
``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` and the end of turn (``tools.forced_tool_plan``).

``prompt_logprobs: k`` (vLLM extension, 0 ≤ k ≤ 20, a JSON integer) scores the prompt in one forward
pass: each choice gets ``prompt_logprobs``, a list as long as its prompt, ``null`` for the first token,
then per position ``{"<token id>": {"logprob", "rank", "decoded_token"}}`` holding the prompt's own token
(first; ``rank`` is its rank in the whole vocabulary) and the ``k`` most likely tokens (ranks 1..k), so
``k`` or ``k + 1`` entries. Logprobs are raw (log-softmax of the logits) whatever the logprobs mode,
``-inf`` reads -9999.0, and without ``prompt_logprobs`` the field is ``null`` (as in vLLM). To recompute
the logprobs of a sampled sequence, send ``prompt = prompt ids + response ids``, ``max_tokens: 1``.
Differences from vLLM: ``-1`` (the whole vocabulary) is refused, and so is ``echo`` with ``max_tokens:
0`` (vLLM's other way to score without sampling); a stream refuses k > 0 and leaves out k = 0, as vLLM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from ..errors import BadRequestError
from .chat import normalize_tools
from .decoding import FREE_PLAN, Generation, Segment
from .protocol import CompletionRequest, sampling_params
from .sampling import SamplingParams
from .serving import (
    SSE_DONE,
    ServerState,
    completion_logprobs,
    compute_prompt_logprobs,
    generate_many,
    new_id,
    now,
    sse,
    stream_error,
    stream_pieces,
    usage,
)
from .tools import forced_tool_plan


@dataclass
class CompletionJob:
    req: CompletionRequest
    prompts: list[list[int]]
    params: list[list[SamplingParams]]  # per prompt, per choice
    id: str
    created: int
    model_name: str
    prompt_logprobs: int | None = None
    plan: tuple[Segment, ...] = FREE_PLAN


async def prepare_completion(state: ServerState, req: CompletionRequest) -> CompletionJob:
    if req.echo:
        raise BadRequestError("echo is not supported", code="unsupported")
    if req.suffix:
        raise BadRequestError("suffix is not supported", code="unsupported")
    prompt_logprobs = req.wanted_prompt_logprobs()
    model = await state.ready()
    prompts = [model.encode(p) if isinstance(p, str) else list(p) for p in req.prompts()]
    top = req.logprobs or 0
    params = []
    for ids in prompts:
        max_tokens = state.max_tokens(ids, req.max_tokens)
        params.append([sampling_params(req, max_tokens, i, top) for i in range(req.n)])
    plan = forced_tool_plan(normalize_tools(req.tools), req.tool_choice, model.end_of_turn_id) or FREE_PLAN
    return CompletionJob(req, prompts, params, new_id("cmpl"), now(), state.served_model_name, prompt_logprobs,
                         plan)


def _logprobs(state: ServerState, job: CompletionJob, gen_ids: list[int], lps: list[float],
              tops: list[list[tuple[int, float]]], offset: int = 0) -> dict[str, Any] | None:
    if job.req.logprobs is None:
        return None
    return completion_logprobs(state.model, gen_ids, lps, tops, job.req.return_tokens_as_token_ids, offset)


def _choice(state: ServerState, job: CompletionJob, index: int, prompt: list[int], gen: Generation,
            prompt_logprobs: list[Any] | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "text": gen.text,
                              "logprobs": _logprobs(state, job, gen.token_ids, gen.logprobs, gen.top_logprobs),
                              "finish_reason": gen.finish_reason, "stop_reason": gen.stop_reason,
                              "prompt_logprobs": prompt_logprobs}
    if job.req.return_token_ids:
        choice["prompt_token_ids"] = prompt
        choice["token_ids"] = gen.token_ids
    return choice


async def completion_response(state: ServerState, job: CompletionJob) -> dict[str, Any]:
    choices = []
    completion_tokens = 0
    for p, (prompt, plist) in enumerate(zip(job.prompts, job.params, strict=True)):
        scored = await compute_prompt_logprobs(state.model, prompt, job.prompt_logprobs)
        gens = await generate_many(state.model, prompt, plist, job.plan)
        for i, gen in enumerate(gens):
            completion_tokens += len(gen.token_ids)
            choices.append(_choice(state, job, p * job.req.n + i, prompt, gen, scored))
    return {"id": job.id, "object": "text_completion", "created": job.created, "model": job.model_name,
            "choices": choices,
            "usage": usage(sum(len(p) for p in job.prompts), completion_tokens)}


def _chunk(job: CompletionJob, choice: dict[str, Any]) -> bytes:
    return sse({"id": job.id, "object": "text_completion", "created": job.created, "model": job.model_name,
                "choices": [choice]})


async def _choice_chunks(state: ServerState, job: CompletionJob, index: int, prompt: list[int],
                         params: SamplingParams) -> AsyncIterator[tuple[bytes, int]]:
    ids: list[int] = []
    lps: list[float] = []
    tops: list[list[tuple[int, float]]] = []
    first, offset, n_tokens = True, 0, 0
    async for piece in stream_pieces(state.model, prompt, params, job.plan):
        ids.append(piece.token_id)
        lps.append(piece.logprob)
        tops.append(list(piece.top_logprobs))
        n_tokens += 1
        if not piece.text and piece.finish_reason is None:
            continue  # held back: the ids ride on the next chunk
        choice: dict[str, Any] = {"index": index, "text": piece.text,
                                  "logprobs": _logprobs(state, job, ids, lps, tops, offset),
                                  "finish_reason": piece.finish_reason, "stop_reason": piece.stop_reason}
        if job.req.return_token_ids:
            if first:
                choice["prompt_token_ids"] = prompt
            choice["token_ids"] = ids
        offset += len(piece.text)
        first = False
        yield _chunk(job, choice), (n_tokens if piece.finish_reason is not None else 0)
        ids, lps, tops = [], [], []


async def completion_stream(state: ServerState, job: CompletionJob) -> AsyncIterator[bytes]:
    completion_tokens = 0
    try:
        for p, (prompt, plist) in enumerate(zip(job.prompts, job.params, strict=True)):
            for i, params in enumerate(plist):
                async for chunk, n in _choice_chunks(state, job, p * job.req.n + i, prompt, params):
                    completion_tokens += n
                    yield chunk
        if job.req.include_usage:
            yield sse({"id": job.id, "object": "text_completion", "created": job.created,
                       "model": job.model_name, "choices": [],
                       "usage": usage(sum(len(p) for p in job.prompts), completion_tokens)})
    except Exception as exc:
        yield stream_error(exc)
    yield SSE_DONE


async def completions(state: ServerState, req: CompletionRequest) -> dict[str, Any] | StreamingResponse:
    job = await prepare_completion(state, req)
    if req.stream:
        return StreamingResponse(completion_stream(state, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await completion_response(state, job)


__all__ = ["completions", "prepare_completion", "completion_response", "completion_stream"]
