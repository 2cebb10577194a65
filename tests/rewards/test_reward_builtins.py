from __future__ import annotations

import pytest

from steplake.rewards import RewardContext, RewardResult
from steplake.rewards.answers import answers_match, extract_answer, to_number
from steplake.rewards.builtins import (
    exact_match,
    final_answer,
    format_check,
    human_feedback,
    length_penalty,
    regex_match,
    tool_call_success,
)
from tests.rewards.reward_testkit import make_ctx, make_step


@pytest.mark.parametrize(
    ("text", "truth", "expected"),
    [
        ("6 times 7 is \\boxed{42}.", 42, 1.0),
        ("so \\boxed{\\frac{3}{4}}", "0.75", 1.0),
        ("\\boxed{x^{2}+1}", "x^{2}+1", 1.0),
        ("Let me think... 40 + 2\n#### 42", "42", 1.0),
        ("The result is 1,234 apples.\nAnswer: 1,234", 1234, 1.0),
        ("Final answer: The capital is Paris.", "paris", 0.0),
        ("Answer: Paris.", "paris", 1.0),
        ("I computed 41 then 43", 42, 0.0),
        ("I computed 41 then 42", 42, 1.0),
        ("The answer is $5.00", 5, 1.0),
        ("Answer: (B)", "B", 1.0),
        ("\\boxed{\\text{Blue Whale}}", "blue whale", 1.0),
        ("Answer: 0.1", 0.1000000001, 1.0),
        ("Answer: -3", 3, 0.0),
        ("no digits at all", 7, 0.0),
        ("Answer: 42", [41, 42], 1.0),
    ],
)
def test_final_answer_matches(text: str, truth: object, expected: float) -> None:
    result = final_answer(make_ctx(text, truth))
    assert result.value == expected, result.details


def test_final_answer_reads_ground_truth_from_first_step_and_params() -> None:
    steps = [make_step(0, "thinking", metadata={"ground_truth": "12"}), make_step(1, "\\boxed{12}")]
    assert final_answer(make_ctx(None, None, steps=steps)).value == 1.0
    assert final_answer(make_ctx("\\boxed{3}", 12, params={"ground_truth": 3})).value == 1.0


def test_final_answer_uses_the_last_step_only() -> None:
    steps = [make_step(1, "Answer: 99"), make_step(0, "Answer: 42")]
    ctx = make_ctx(None, 99, steps=steps)  # steps are re-ordered by step_index
    assert [s["step_index"] for s in ctx.steps] == [0, 1]
    assert final_answer(ctx).value == 1.0


def test_final_answer_without_ground_truth_is_a_failure() -> None:
    result = final_answer(make_ctx("Answer: 4"))
    assert result.value is None and result.error and "ground_truth" in result.error


def test_extraction_modes_and_numbers() -> None:
    assert extract_answer("a \\boxed{1} b \\boxed{2}") is not None
    assert extract_answer("a \\boxed{1} b \\boxed{2}").text == "2"  # type: ignore[union-attr]
    assert extract_answer("#### 7 and 9", "hash").text == "7 and 9"  # type: ignore[union-attr]
    assert extract_answer("nothing", "boxed") is None
    assert to_number("50%") == 50.0 and to_number("-\\frac{1}{2}") == -0.5 and to_number("abc") is None
    assert answers_match("1e3", 1000) == (True, "numeric")
    with pytest.raises(ValueError):
        extract_answer("x", "bogus")


def test_exact_and_regex_match() -> None:
    assert exact_match(make_ctx("  Paris ", "paris")).value == 1.0
    assert exact_match(make_ctx("Paris", "paris", params={"normalize": False})).value == 0.0
    assert exact_match(make_ctx("yes", None, params={"target": ["yes", "y"]})).value == 1.0
    ctx = make_ctx("<answer>42</answer>", params={"pattern": r"<answer>.*</answer>"})
    assert regex_match(ctx).value == 1.0
    ctx = make_ctx("<answer>42</answer>", 42, params={"pattern": r"<answer>(.*?)</answer>", "group": 1})
    assert regex_match(ctx).details["captured"] == "42" and regex_match(ctx).value == 1.0
    ctx = make_ctx("<answer>41</answer>", 42, params={"pattern": r"<answer>(.*?)</answer>", "group": 1})
    assert regex_match(ctx).value == 0.0
    assert regex_match(make_ctx("abc", params={"pattern": "b", "fullmatch": True})).value == 0.0


def test_format_check() -> None:
    params = {"required": [r"<think>.*</think>"], "forbidden": ["TODO"], "mode": "fraction"}
    good = format_check(make_ctx("<think>hm</think> 42", params=params))
    assert good.value == 1.0 and all(good.details["checks"].values())
    half = format_check(make_ctx("42 TODO", params={**params, "final_without_tool_calls": False}))
    assert half.value == 0.0
    assert format_check(make_ctx('```json\n{"a": 1}\n```', params={"json": True})).value == 1.0
    assert format_check(make_ctx("{a: 1}", params={"json": True})).value == 0.0
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    steps = [make_step(0, "let me call", tool_calls=[call])]
    assert format_check(make_ctx(None, steps=steps)).value == 0.0


@pytest.mark.parametrize(
    ("tokens", "expected"), [(100, 0.0), (1000, 0.0), (1500, -0.25), (2000, -0.5), (5000, -0.5)]
)
def test_length_penalty(tokens: int, expected: float) -> None:
    params = {"target_tokens": 1000, "max_tokens": 2000, "coefficient": 0.5}
    result = length_penalty(make_ctx(None, steps=[make_step(0, "x", n_tokens=tokens)], params=params))
    assert result.value == pytest.approx(expected) and result.details["tokens"] == tokens


def test_length_penalty_counts_all_steps_or_the_last() -> None:
    steps = [make_step(0, "a", n_tokens=600), make_step(1, "b", n_tokens=600)]
    params = {"max_tokens": 1000}
    assert length_penalty(make_ctx(None, steps=steps, params=params)).value == -1.0
    last = length_penalty(make_ctx(None, steps=steps, params={**params, "scope": "last_step"}))
    assert last.value == pytest.approx(-0.6)
    text_step = {**make_step(0, "a", n_tokens=0), "token_source": "text", "usage": {"completion_tokens": 500}}
    assert length_penalty(make_ctx(None, steps=[text_step], params=params)).details["tokens"] == 500


def _call(cid: str, args: str) -> dict[str, object]:
    return {"id": cid, "type": "function", "function": {"name": "calc", "arguments": args}}


def test_tool_call_success() -> None:
    steps = [
        make_step(0, None, tool_calls=[_call("a", '{"x": 1}'), _call("b", "{broken")]),
        make_step(
            1,
            None,
            tool_calls=[_call("c", '{"x": 2}')],
            messages=[
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": [_call("a", '{"x": 1}')]},
                {"role": "tool", "tool_call_id": "a", "content": "42"},
                {"role": "tool", "tool_call_id": "b", "content": "ok"},
            ],
        ),
        make_step(
            2,
            "done",
            messages=[
                {"role": "tool", "tool_call_id": "c", "content": "Error: division by zero"},
            ],
        ),
    ]
    result = tool_call_success(make_ctx(None, steps=steps))
    assert result.value == pytest.approx(1 / 3)
    assert result.details["failed_ids"] == ["b", "c"]


def test_tool_call_success_anthropic_blocks_and_no_calls() -> None:
    call = {"id": "tu1", "name": "search", "input": {"q": "x"}}
    steps = [
        make_step(0, None, tool_calls=[call]),
        make_step(
            1,
            "done",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "tu1", "content": "found", "is_error": True}
                    ],
                }
            ],
        ),
    ]
    assert tool_call_success(make_ctx(None, steps=steps)).value == 0.0
    no_calls = tool_call_success(make_ctx("hello"))
    assert no_calls.value is None and no_calls.error is None
    assert tool_call_success(make_ctx("hello", params={"no_calls_value": 1})).value == 1.0


def test_human_feedback() -> None:
    feedback = [
        {"kind": "thumbs", "value": "up"},
        {"kind": "rating", "value": 2},  # 1..5 → -0.5
        {"kind": "comment", "value": "nice"},
    ]
    result = human_feedback(make_ctx("x", feedback=feedback))
    assert result.value == pytest.approx((1.0 - 0.5) / 2) and result.details["signals"] == 2
    down = human_feedback(make_ctx("x", feedback=[{"kind": "thumbs", "value": -1}]))
    assert down.value == -1.0
    scaled = human_feedback(
        make_ctx("x", feedback=[{"kind": "rating", "value": 10}], params={"rating_max": 10})
    )
    assert scaled.value == 1.0
    corrected = [{"kind": "correction", "value": "42"}]
    assert human_feedback(make_ctx("Answer: 42", feedback=corrected)).value == 1.0
    assert human_feedback(make_ctx("Answer: 41", feedback=corrected)).value == -1.0
    assert human_feedback(make_ctx("x")).value is None


async def test_builtins_through_the_protocol() -> None:
    from steplake.rewards.builtins import builtin_rewards

    fns = builtin_rewards()
    assert set(fns) >= {"final_answer", "length_penalty", "human_feedback"}
    ctx: RewardContext = make_ctx("\\boxed{42}", 42)
    result = await fns["final_answer"].score(ctx)
    assert isinstance(result, RewardResult) and result.value == 1.0
    assert fns["final_answer"].version == "1"
