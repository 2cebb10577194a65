"""The embedded model in-process: exact ids, logprobs, stop handling, forced tool calls, reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steplake.errors import BadRequestError
from steplake.model import SamplingParams, forced_tool_plan, parse_tool_calls
from steplake.model.chat import normalize_tools
from steplake.model.testing import non_canonical_sample, reencodes_differently

pytestmark = pytest.mark.slow

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression",
                                         "parameters": {"type": "object", "properties": {
                                             "expression": {"type": "string"}}, "required": ["expression"]}}}
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def test_render_chat_matches_the_template(local_model: Any) -> None:
    ids = local_model.render_chat(CAPITAL)
    ref = local_model.tokenizer.apply_chat_template(CAPITAL, add_generation_prompt=True, tokenize=True)
    assert ids == list(ref["input_ids"] if isinstance(ref, dict) or hasattr(ref, "keys") else ref)


def test_greedy_ids_end_with_the_stop_token_and_logprobs_recompute(local_model: Any) -> None:
    prompt = local_model.render_chat(CAPITAL)
    gen = local_model.generate(prompt, SamplingParams(max_tokens=24, temperature=0, top_logprobs=3))
    assert gen.finish_reason == "stop" and gen.token_ids[-1] == local_model.end_of_turn_id
    assert "Paris" in gen.text and "<|im_end|>" not in gen.text
    assert gen.text == local_model.decode(gen.token_ids, skip_special_tokens=True)
    assert len(gen.logprobs) == len(gen.token_ids) == len(gen.top_logprobs)
    assert all(len(t) == 3 and t[0][1] >= t[1][1] for t in gen.top_logprobs)
    recomputed = local_model.compute_logprobs(prompt, gen.token_ids)
    assert max(abs(a - b) for a, b in zip(recomputed, gen.logprobs, strict=True)) < 1e-3


def test_sampled_logprobs_recompute_and_seed_reproduces(local_model: Any) -> None:
    prompt = local_model.render_chat(CAPITAL)
    params = SamplingParams(max_tokens=12, temperature=1.3, top_p=0.95, seed=7)
    a, b = local_model.generate(prompt, params), local_model.generate(prompt, params)
    assert a.token_ids == b.token_ids and a.finish_reason in ("stop", "length")
    recomputed = local_model.compute_logprobs(prompt, a.token_ids)
    assert max(abs(x - y) for x, y in zip(recomputed, a.logprobs, strict=True)) < 1e-3
    processed = local_model.generate(prompt, SamplingParams(max_tokens=12, temperature=1.3, top_p=0.95, seed=7,
                                                            logprobs_mode="processed"))
    assert processed.token_ids == a.token_ids and processed.logprobs != a.logprobs


def test_stop_string_is_cut_from_text_but_its_token_kept(local_model: Any) -> None:
    prompt = local_model.render_chat(CAPITAL)
    gen = local_model.generate(prompt, SamplingParams(max_tokens=24, temperature=0, stop=("Paris",)))
    assert gen.finish_reason == "stop" and gen.stop_reason == "Paris"
    assert "Paris" not in gen.text and local_model.decode(gen.token_ids).endswith("Paris")
    streamed = "".join(p.text for p in local_model.stream(prompt, SamplingParams(max_tokens=24, temperature=0,
                                                                                 stop=("Paris",))))
    assert streamed == gen.text


def test_forced_tool_call_is_valid_json_and_logprobs_cover_forced_tokens(local_model: Any) -> None:
    tools = normalize_tools([CALC])
    prompt = local_model.render_chat([{"role": "user", "content": "What is 37*3?"}], tools)
    plan = forced_tool_plan(tools, {"type": "function", "function": {"name": "calculator"}},
                            local_model.end_of_turn_id)
    gen = local_model.generate(prompt, SamplingParams(max_tokens=40, temperature=0.7, seed=1), plan)
    assert gen.finish_reason == "stop" and gen.token_ids[-1] == local_model.end_of_turn_id
    assert gen.forced[0] and gen.forced[-1] and not all(gen.forced)
    parsed = parse_tool_calls(gen.text)
    assert [c.name for c in parsed.tool_calls] == ["calculator"] and not parsed.repairs
    assert "expression" in json.loads(parsed.tool_calls[0].arguments)
    recomputed = local_model.compute_logprobs(prompt, gen.token_ids)
    assert max(abs(x - y) for x, y in zip(recomputed, gen.logprobs, strict=True)) < 1e-3


def test_non_canonical_sample_exists(local_model: Any) -> None:
    prompt = local_model.render_chat([{"role": "user", "content": "Tell me a story."}])
    seed, gen = non_canonical_sample(local_model, prompt, max_tokens=24)
    assert reencodes_differently(local_model, gen)
    again = local_model.generate(prompt, SamplingParams(max_tokens=24, temperature=1.6, seed=seed))
    assert again.token_ids == gen.token_ids


def test_bad_prompts(local_model: Any) -> None:
    with pytest.raises(BadRequestError):
        local_model.check_prompt([])
    with pytest.raises(BadRequestError):
        local_model.check_prompt([1, 10**7])
    with pytest.raises(BadRequestError):
        local_model.check_prompt([1] * 10, max_tokens=local_model.context_length)


def test_reload_from_save_pretrained(local_model: Any, tmp_path: Path) -> None:
    prompt = local_model.render_chat(CAPITAL)
    params = SamplingParams(max_tokens=8, temperature=0)
    before = local_model.generate(prompt, params)
    local_model.save_pretrained(tmp_path / "policy")
    version = local_model.weights_version
    local_model.reload(tmp_path / "policy")
    assert local_model.weights_version == version + 1 and local_model.weights_path == tmp_path / "policy"
    after = local_model.generate(prompt, params)
    assert after.token_ids == before.token_ids
    with pytest.raises(BadRequestError):
        local_model.reload(tmp_path / "missing")
    assert local_model.weights_path == tmp_path / "policy"
