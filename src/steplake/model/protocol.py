"""Request bodies of the model server (OpenAI + vLLM extensions) and their sampling parameters.

Unknown fields are accepted and ignored, like vLLM. Types and ranges are checked; a failure is a 400
in OpenAI shape (see ``server.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BadRequestError
from .sampling import SamplingParams
from .scoring import MAX_PROMPT_LOGPROBS


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingFields(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool = False
    return_tokens_as_token_ids: bool = False
    prompt_logprobs: Annotated[int, Field(strict=True, ge=0, le=MAX_PROMPT_LOGPROBS)] | None = None
    user: str | None = None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def wanted_prompt_logprobs(self) -> int | None:
        """``prompt_logprobs`` for a non-streamed answer; like vLLM, a stream refuses a positive value and
        leaves out ``prompt_logprobs: 0``."""
        if self.prompt_logprobs is None:
            return None
        if self.stream:
            if self.prompt_logprobs > 0:
                raise BadRequestError("prompt_logprobs are not available when stream is true",
                                      code="invalid_prompt_logprobs")
            return None
        return self.prompt_logprobs


class ChatRequest(SamplingFields):
    messages: list[Any] = Field(min_length=1)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    response_format: dict[str, Any] | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    # steplake extension: the chat route's forced calls on a token prompt (the gateway's token path); the
    # prompt already describes the tools, these only constrain the decoding (see tools.forced_tool_plan)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise BadRequestError("prompt must not be empty", code="empty_prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class TokenizeRequest(_Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[Any] | None = None
    tools: list[Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[int]
    return_token_texts: bool = False  # steplake: also each token's text in context (see server.detokenize)


class UpdateWeightsRequest(_Body):
    model_path: str = Field(min_length=1)
    load_format: str | None = None


def sampling_params(req: SamplingFields, max_tokens: int, index: int, top_logprobs: int) -> SamplingParams:
    """Engine parameters for choice ``index`` (a seed is offset by the index so n > 1 choices differ)."""
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            seed=None if req.seed is None else req.seed + index,
            stop=req.stop_list(),
            stop_token_ids=tuple(req.stop_token_ids or ()),
            ignore_eos=req.ignore_eos,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
            top_logprobs=top_logprobs,
        )
    except ValueError as exc:
        raise BadRequestError(str(exc), code="invalid_sampling") from exc


__all__ = ["StreamOptions", "SamplingFields", "ChatRequest", "CompletionRequest", "TokenizeRequest",
           "DetokenizeRequest", "UpdateWeightsRequest", "sampling_params"]
