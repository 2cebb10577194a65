"""Chat and completions through the gateway (OpenAI SDK), streamed and not: the stored ids are vLLM's own
(``prompt_token_ids``/``token_ids`` of the same request sent straight to vLLM, greedy, float32) and equal
vLLM's ``/tokenize`` of the same input; logprobs are aligned with them; the stop token is kept."""

from __future__ import annotations

import pytest

from tests.vllm.conftest import MODEL, Gateway
from tests.vllm.wire import (
    MESSAGES,
    QUESTION,
    STOP_ID,
    TOOLS,
    assert_step_matches,
    chat_logprobs,
    direct,
    openai_client,
    tokenize,
    wait_steps,
)
from tests.vllm_server import VllmServer

# the completions prompt is the chat rendered by hand, so the answer ends with <|im_end|> (finish "stop")
CHATML = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_ids_are_vllms(vllm: VllmServer, gateway: Gateway, stream: bool) -> None:
    tid = f"chat-{stream}"
    body = {"messages": MESSAGES, "tools": TOOLS, "max_tokens": 24, "temperature": 0}
    client = openai_client(gateway, tid)
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, stream=True, **body))  # type: ignore[call-overload]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        answer = client.chat.completions.create(model=MODEL, **body)  # type: ignore[call-overload]
        text, finish = answer.choices[0].message.content or "", [answer.choices[0].finish_reason]
    assert finish == ["stop"]

    ref = direct(vllm, "/chat/completions", body)
    choice = ref["choices"][0]
    assert text == choice["message"]["content"] and choice["finish_reason"] == "stop"
    assert choice["token_ids"][-1] == STOP_ID
    [step] = wait_steps(gateway, tid)
    assert step["finish_reason"] == "stop" and step["response"]["content"] == text
    assert step["provenance"]["stream"] is stream and step["provenance"]["protocol"] == "openai.chat"
    assert_step_matches(step, ref["prompt_token_ids"], choice["token_ids"], chat_logprobs(choice))
    assert step["prompt_ids"] == tokenize(vllm, messages=MESSAGES, tools=TOOLS)


def test_chat_cut_by_max_tokens_has_no_stop_token(vllm: VllmServer, gateway: Gateway) -> None:
    messages = [{"role": "user", "content": "Say hello."}]  # greedy: a long greeting
    answer = openai_client(gateway, "chat-length").chat.completions.create(
        model=MODEL, messages=messages, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert answer.choices[0].finish_reason == "length"
    ref = direct(vllm, "/chat/completions", {"messages": messages, "max_tokens": 12, "temperature": 0})
    [step] = wait_steps(gateway, "chat-length")
    assert step["finish_reason"] == "length" and len(step["response_ids"]) == 12
    assert_step_matches(step, ref["prompt_token_ids"], ref["choices"][0]["token_ids"],
                        chat_logprobs(ref["choices"][0]))
    assert step["prompt_ids"] == tokenize(vllm, messages=messages)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_completions_ids_are_vllms(vllm: VllmServer, gateway: Gateway, stream: bool) -> None:
    tid = f"completions-{stream}"
    body = {"prompt": CHATML, "max_tokens": 24, "temperature": 0}
    client = openai_client(gateway, tid)
    if stream:
        chunks = list(client.completions.create(model=MODEL, stream=True, **body))  # type: ignore[call-overload]
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        answer = client.completions.create(model=MODEL, **body)  # type: ignore[call-overload]
        text, finish = answer.choices[0].text, [answer.choices[0].finish_reason]
    assert finish == ["stop"]

    ref = direct(vllm, "/completions", body)
    choice = ref["choices"][0]
    assert text == choice["text"]
    [step] = wait_steps(gateway, tid)
    assert step["provenance"]["protocol"] == "openai.completions" and step["provenance"]["stream"] is stream
    assert_step_matches(step, choice["prompt_token_ids"], choice["token_ids"], choice["logprobs"]["token_logprobs"])
    assert step["prompt_ids"] == tokenize(vllm, prompt=CHATML)
