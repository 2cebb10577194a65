"""Slow: the embedded model server's /tokenize and /detokenize (vLLM's wire, plus ``token_texts``), and the
dashboard's token view behind a ``steplake+`` upstream (the demo's), decoded by that server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from steplake.app import create_app
from steplake.config import Settings
from steplake.store.sqlite import SqliteStore
from tests.api.servers import asgi_client

pytestmark = pytest.mark.slow

TEXT = "Café → 😀 and 中文, naïve"
CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                         "parameters": {"type": "object", "properties": {
                                             "expression": {"type": "string"}}, "required": ["expression"]}}}


def post(url: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=300)


def test_tokenize_and_detokenize_speak_vllms_wire(model_server: str) -> None:
    msgs = [{"role": "user", "content": TEXT}]
    chat = post(model_server, "/tokenize", {"messages": msgs, "add_generation_prompt": True, "tools": [CALC]}).json()
    assert set(chat) >= {"tokens", "count", "max_model_len"} and chat["count"] == len(chat["tokens"])
    assert chat["max_model_len"] > chat["count"]
    bare = post(model_server, "/tokenize", {"messages": msgs, "add_generation_prompt": False}).json()
    assert bare["count"] < chat["count"]
    ids = post(model_server, "/tokenize", {"prompt": TEXT}).json()["tokens"]
    assert post(model_server, "/detokenize", {"tokens": ids}).json() == {"prompt": TEXT}
    out = post(model_server, "/detokenize", {"tokens": ids, "return_token_texts": True}).json()
    texts = out["token_texts"]
    assert out["prompt"] == TEXT and len(texts) == len(ids) and "".join(texts) == TEXT
    assert len(ids) > len(TEXT.split()) and "\ufffd" not in "".join(texts)
    assert any("😀" in t for t in texts) and any("中" in t for t in texts)
    bad = post(model_server, "/detokenize", {"tokens": [10**7]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_token_id"


async def test_token_view_behind_a_steplake_upstream_uses_its_detokenize(model_server: str, tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "pool.db"), upstream=[f"steplake+{model_server}"], capture_sync=True)
    async with asgi_client(create_app(settings, SqliteStore(settings.db))) as c:
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": TEXT}],
                                                       "max_tokens": 8, "temperature": 0}, timeout=300)
        assert r.status_code == 200, r.text
        step = (await c.get("/api/v1/steps")).json()["items"][0]
        view = (await c.get("/api/v1/dashboard/tokens", params={"step_id": step["step_id"]}, timeout=60)).json()
    assert view["tokenizer"] == f"{model_server}/detokenize" and view["tokenizer_error"] is None
    assert len(view["prompt"]) == len(step["prompt_ids"]) and len(view["response"]) == len(step["response_ids"])
    assert not any(re.fullmatch(r"<\d+>", t) for t in view["prompt"] + view["response"])
    prompt = "".join(view["prompt"])
    assert prompt == post(model_server, "/detokenize", {"tokens": step["prompt_ids"]}).json()["prompt"]
    assert TEXT in prompt and "<|im_start|>" in view["prompt"] and any("😀" in t for t in view["prompt"])
