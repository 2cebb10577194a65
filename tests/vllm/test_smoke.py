from __future__ import annotations

import httpx

from tests.vllm.conftest import MODEL, Gateway


def test_gateway_answers_through_vllm(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/t/smoke-1/v1/chat/completions", timeout=120,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4,
                         "temperature": 0})
    assert r.status_code == 200, r.text
    steps = gateway.steps("smoke-1")
    assert len(steps) == 1 and steps[0]["token_source"] == "upstream", steps
    print(steps[0]["provenance"])
