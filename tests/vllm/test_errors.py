"""Failures of a real vLLM reach the agent in its protocol, store nothing, and leave the gateway serving.

- vLLM's own 400 (``max_tokens`` beyond the context) through the OpenAI and Anthropic SDKs;
- vLLM "killed" mid-stream: a TCP proxy between a gateway of this module and vLLM drops the connections
  while tokens are streaming (vLLM itself keeps running);
- vLLM "restarted": the proxy refuses connections, then accepts again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest

from tests.procs import stop_process
from tests.vllm.conftest import MODEL, Gateway, launch_gateway
from tests.vllm.proxy import TcpProxy
from tests.vllm.wire import MESSAGES, anthropic_client, openai_client, steps_or_none, wait_steps
from tests.vllm_server import VllmServer

LONG = [{"role": "user", "content": "Say hello."}]  # greedy: a long greeting, cut by max_tokens


@pytest.fixture(scope="module")
def proxied(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, TcpProxy]]:
    """A gateway of its own whose upstream is vLLM behind a :class:`TcpProxy`."""
    proxy = TcpProxy(vllm.port).start()
    gw = launch_gateway(tmp_path_factory.mktemp("proxied"), f"vllm+{proxy.url}",
                        extra=("--prompt-mode", "chat"))
    try:
        yield gw, proxy
    finally:
        stop_process(gw.proc)
        proxy.stop()


def agent(gw: Gateway, tid: str, protocol: str = "openai") -> Any:
    """An SDK client for the trajectory (typed loosely: these tests pass plain dicts and read errors)."""
    return openai_client(gw, tid) if protocol == "openai" else anthropic_client(gw, tid)


def assert_serving(gw: Gateway, tid: str) -> None:
    """The gateway is healthy and a call through it is answered and stored."""
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200
    answer = agent(gw, tid).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content
    [step] = wait_steps(gw, tid)
    assert step["token_source"] == "upstream" and step["response_ids"]


def test_vllm_400_reaches_the_openai_agent(gateway: Gateway) -> None:
    client = agent(gateway, "err-400-openai")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5000,
                                           temperature=0, stream=stream)
        assert e.value.status_code == 400
        body: Any = e.value.body
        assert isinstance(body, dict) and "max_tokens=5000" in body["message"]  # vLLM's own message
        assert "max_model_len=4096" in body["message"] and body["type"]
    assert steps_or_none(gateway, "err-400-openai") == []


def test_vllm_400_reaches_the_anthropic_agent(gateway: Gateway) -> None:
    client = agent(gateway, "err-400-anthropic", "anthropic")
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(model=MODEL, max_tokens=5000, stream=stream,
                                   messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 400
        body: Any = e.value.body
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "max_tokens=5000" in body["error"]["message"]
    assert steps_or_none(gateway, "err-400-anthropic") == []


def test_vllm_killed_mid_stream(proxied: tuple[Gateway, TcpProxy]) -> None:
    gw, proxy = proxied
    stream = agent(gw, "cut-openai").chat.completions.create(
        model=MODEL, messages=LONG, max_tokens=24, temperature=0, stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            got += [chunk.choices[0].delta.content or ""] if chunk.choices else []
            if len(got) == 4:
                assert proxy.cut() >= 1  # the gateway's connection to vLLM, mid-answer
    assert len(got) >= 4 and "[DONE]" not in "".join(got)
    assert not isinstance(e.value, openai.APIConnectionError), "the agent gets an error event, not a broken stream"
    assert e.value.message  # the gateway's error event names the failure

    with agent(gw, "cut-anthropic", "anthropic").messages.stream(
            model=MODEL, max_tokens=24, messages=LONG, extra_body={"temperature": 0}) as s:
        events: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as ae:
            for event in s:
                events.append(event.type)
                if event.type == "content_block_delta" and events.count(event.type) == 3:
                    assert proxy.cut() >= 1
    assert events[0] == "message_start" and "message_stop" not in events
    assert cast(Any, ae.value.body)["type"] == "error"

    assert_serving(gw, "after-cut")  # the same proxy still accepts: the gateway reconnects
    time.sleep(0.5)  # captures run in the background; the failed calls must not appear later either
    assert steps_or_none(gw, "cut-openai") == [] and steps_or_none(gw, "cut-anthropic") == []


def test_vllm_restarted(proxied: tuple[Gateway, TcpProxy]) -> None:
    gw, proxy = proxied
    assert_serving(gw, "before-restart")
    proxy.refuse()  # vLLM "down": connection refused
    client = agent(gw, "while-down")
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert e.value.status_code == 502 and "unreachable" in e.value.message, e.value.body
    with pytest.raises(anthropic.APIStatusError) as ae:
        agent(gw, "while-down-anthropic", "anthropic").messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert ae.value.status_code == 502 and cast(Any, ae.value.body)["type"] == "error"
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200
    proxy.accept()  # vLLM "back"
    assert_serving(gw, "after-restart")
    assert steps_or_none(gw, "while-down") == [] and steps_or_none(gw, "while-down-anthropic") == []
