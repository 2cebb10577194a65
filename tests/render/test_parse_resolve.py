"""Reading completions (hermes), the ``renderers`` package behind the Renderer protocol, and resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steplake.render.base import Renderer
from steplake.render.generic import TemplateRenderer
from steplake.render.hermes import parse_hermes
from steplake.render.pypi import PackageRenderer, known_name, renderer_name_for
from steplake.render.resolve import resolve
from steplake.upstreams.tokenizer import FallbackTokenizer
from tests.render.tiny import tiny_tokenizer

CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}}}}


def test_hermes_text_calls_reasoning_and_a_cut_call() -> None:
    p = parse_hermes("The answer is 4.")
    assert (p.content, p.tool_calls, p.problems) == ("The answer is 4.", [], [])
    p = parse_hermes('Let me compute.\n<tool_call>{"name": "calculator", "arguments": {"expression":  "2+2"}}'
                     '</tool_call>\n<tool_call>{"name": "noop", "arguments": "{}"}</tool_call>')
    assert p.content == "Let me compute."
    assert [(c.name, c.arguments) for c in p.tool_calls] == [("calculator", '{"expression":  "2+2"}'),
                                                             ("noop", "{}")]
    p = parse_hermes("<think>2+2 is 4</think>It is 4.")
    assert (p.reasoning, p.content) == ("2+2 is 4", "It is 4.")
    cut = '<tool_call>{"name": "calculator", "arguments": {"expre'
    p = parse_hermes(cut)
    assert p.tool_calls == [] and p.content == cut and "unclosed" in p.problems[0]


def qwen_like_tokenizer() -> Any:
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>", "<tool_call>", "</tool_call>",
                                                         "<tool_response>", "</tool_response>"]})
    return tok


def test_the_renderers_package_behind_the_protocol() -> None:
    assert renderer_name_for("Qwen/Qwen3-8B") == "qwen3" and known_name("qwen3") and not known_name("nope")
    tok = qwen_like_tokenizer()
    r = PackageRenderer(tok, "qwen3")
    assert isinstance(r, Renderer) and r.name == "renderers:qwen3"
    prompt = r.render([{"role": "user", "content": "what is 2+2?"}], [CALC])
    assert tok.decode(prompt).endswith("<|im_start|>user\nwhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    resp = tok.encode('<think>x</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}'
                      "\n</tool_call>", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    parsed = r.parse(resp)
    assert (parsed.reasoning, parsed.content) == ("x", None)
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("calculator", '{"expression": "2+2"}')]
    bridge = r.bridge(prompt, resp, [{"role": "tool", "content": "4"}], [CALC])
    assert tok.decode(bridge) == ("\n<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n"
                                  "<|im_start|>assistant\n")


class MyRenderer(TemplateRenderer):
    def __init__(self, tok: Any) -> None:
        super().__init__(tok, name="mine")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    tiny_tokenizer().save_pretrained(str(d))
    return d


def test_resolution_order(tok_dir: Path) -> None:
    tok = FallbackTokenizer(str(tok_dir))
    got = resolve(None, tok, "some/model", "vllm")
    assert isinstance(got.renderer, TemplateRenderer) and got.renderer.name == "generic-hermes"
    assert got.tokenizer == str(tok_dir)
    got = resolve("native", tok, None, "vllm")
    assert isinstance(got.renderer, TemplateRenderer) and got.renderer.convention == "native"
    got = resolve(f"{__name__}:MyRenderer", tok, None, "vllm")
    assert got.renderer is not None and got.renderer.name == "mine"
    got = resolve("no-such-renderer", tok, None, "vllm")
    assert got.renderer is None and "no-such-renderer" in (got.reason or "")
    got = resolve(f"{__name__}:Missing", tok, None, "vllm")
    assert got.renderer is None and "Missing" in (got.reason or "")


def test_no_tokenizer_no_renderer_with_the_reason() -> None:
    got = resolve(None, None, None, "vllm")
    assert got.renderer is None and "no tokenizer" in (got.reason or "")
    got = resolve(None, None, "no-such-org/no-such-model-xyz", "vllm")
    assert got.renderer is None and "no-such-model-xyz" in (got.reason or "")
