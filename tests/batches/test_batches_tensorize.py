"""Padded and packed tensors: shapes, padding sides, alignment, torch parity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steplake.batches import SequenceTooLongError, apply_recipe, tensorize, tensorize_rows
from tests.batches.batches_pool import clean_three_step_trajectory, single_step_group, step, trajectory


def two_rows() -> list[dict[str, Any]]:
    return [
        {"prompt_ids": [1, 2, 3], "response_ids": [5], "response_logprobs": [-0.1], "advantage": 0.5,
         "token_level_rewards": [1.0], "reward": 1.0},
        {"prompt_ids": [4], "response_ids": [6, 7, 8], "response_logprobs": None, "advantage": -0.5,
         "token_level_rewards": [0.0, 0.0, 0.0], "reward": 0.0},
    ]  # fmt: skip


def test_padded_left_pads_prompts_and_right_pads_responses() -> None:
    out = tensorize_rows(two_rows(), mode="padded", pad_token_id=-1)
    assert out["prompts"].tolist() == [[1, 2, 3], [-1, -1, 4]]
    assert out["responses"].tolist() == [[5, -1, -1], [6, 7, 8]]
    assert out["input_ids"].tolist() == [[1, 2, 3, 5, -1, -1], [-1, -1, 4, 6, 7, 8]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 3, 3], [0, 0, 0, 1, 2, 3]]
    assert out["response_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert np.allclose(out["old_log_probs"], [[-0.1, 0, 0], [0, 0, 0]])
    assert out["advantages"].tolist() == [[0.5, 0, 0], [-0.5, -0.5, -0.5]]
    assert out["token_level_rewards"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert out["rewards"].tolist() == [1, 0] and out["has_log_probs"].tolist() == [True, False]
    assert out["prompt_lens"].tolist() == [3, 1] and out["response_lens"].tolist() == [1, 3]
    assert out["input_ids"].dtype == np.int64 and out["advantages"].dtype == np.float32


def test_packed_concatenates_rows() -> None:
    out = tensorize_rows(two_rows(), mode="packed")
    assert out["input_ids"].tolist() == [1, 2, 3, 5, 4, 6, 7, 8]
    assert out["cu_seqlens"].tolist() == [0, 4, 8] and out["cu_seqlens"].dtype == np.int32
    assert out["seq_lens"].tolist() == [4, 4]
    assert out["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert out["response_mask"].tolist() == [0, 0, 0, 1, 0, 1, 1, 1]
    assert out["old_log_probs"].tolist() == pytest.approx([0, 0, 0, -0.1, 0, 0, 0, 0])
    assert out["advantages"].tolist() == [0, 0, 0, 0.5, 0, -0.5, -0.5, -0.5]
    assert out["token_level_rewards"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert out["rewards"].tolist() == [1, 0]


def test_trajectory_layout_loss_mask_in_tensors() -> None:
    other = trajectory("o", 0.0, [step("o0", "o", 0, [1, 2, 3], [16])])
    res = apply_recipe("grpo", [{"group_id": "g", "trajectories": [clean_three_step_trajectory(), other]}])
    out = tensorize(res.to_dict(), layout="trajectory", pad_token_id=0)
    assert out["responses"].tolist() == [[10, 11, 20, 21, 12, 13, 14, 30, 15], [16, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert out["response_mask"].tolist()[0] == [1, 1, 0, 0, 1, 1, 1, 0, 1]
    # attention covers the tool result and the user turn; the loss mask does not
    assert out["attention_mask"][0].tolist() == [1] * 12
    a = 0.5 / (0.5**0.5 + 1e-6)
    assert out["advantages"][0].tolist() == pytest.approx([a, a, 0, 0, a, a, a, 0, a], abs=1e-6)
    assert out["old_log_probs"][0].tolist() == [-1, -2, 0, 0, -3, -4, -5, 0, -6]
    assert out["token_level_rewards"][0].tolist() == [0, 0, 0, 0, 0, 0, 0.25, 0, 1]
    packed = tensorize(res.to_dict(), layout="trajectory", mode="packed")
    assert packed["response_mask"].tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1] + [0, 0, 0, 1]


def test_step_layout_from_groups_and_batch_agree() -> None:
    groups = apply_recipe("rloo", [single_step_group("g", [1, 0])]).groups
    a, b = tensorize(groups), tensorize({"groups": groups})
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a["advantages"].tolist() == [[1, 1], [-1, -1]]
    assert a["token_level_rewards"].tolist() == [[0, 1], [0, 0]]


def test_max_length() -> None:
    with pytest.raises(SequenceTooLongError, match="truncation='left'"):
        tensorize_rows(two_rows(), max_length=3)
    out = tensorize_rows(two_rows(), max_length=3, truncation="left", pad_token_id=-1)
    assert out["prompts"].tolist() == [[2, 3], [-1, -1]]
    assert out["input_ids"].tolist() == [[2, 3, 5, -1, -1], [-1, -1, 6, 7, 8]]
    assert out["prompt_lens"].tolist() == [2, 0]
    with pytest.raises(SequenceTooLongError, match="response of 3 tokens"):
        tensorize_rows(two_rows(), max_length=2, truncation="left")


def test_empty_batch() -> None:
    out = tensorize({"groups": []})
    assert out["input_ids"].shape == (0, 0) and out["rewards"].shape == (0,)
    assert tensorize([], mode="packed")["cu_seqlens"].tolist() == [0]


@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_torch_backend_matches_numpy(mode: str) -> None:
    torch = pytest.importorskip("torch")
    np_out = tensorize_rows(two_rows(), mode=mode)
    t_out = tensorize_rows(two_rows(), mode=mode, backend="torch")
    assert np_out.keys() == t_out.keys()
    for key, arr in np_out.items():
        assert isinstance(t_out[key], torch.Tensor)
        assert np.array_equal(t_out[key].numpy(), arr), key
    assert t_out["input_ids"].dtype == torch.int64 and t_out["advantages"].dtype == torch.float32


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        tensorize_rows(two_rows(), mode="ragged")
    with pytest.raises(ValueError, match="unknown backend"):
        tensorize_rows(two_rows(), backend="jax")


ids = st.lists(st.integers(min_value=1, max_value=50_000), max_size=12)
row_st = st.builds(
    lambda p, r, adv, lp: {
        "prompt_ids": p,
        "response_ids": r,
        "response_logprobs": [-0.5 - i for i in range(len(r))] if lp else None,
        "advantage": adv,
        "token_level_rewards": [float(i) for i in range(len(r))],
        "reward": 1.0,
    },
    ids,
    ids,
    st.one_of(st.none(), st.floats(min_value=-3, max_value=3, width=32)),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(row_st, max_size=6))
def test_packed_and_padded_hold_the_same_tokens(rows: list[dict[str, Any]]) -> None:
    padded = tensorize_rows(rows, mode="padded")
    packed = tensorize_rows(rows, mode="packed")
    att = padded["attention_mask"].astype(bool)
    assert np.array_equal(padded["input_ids"][att], packed["input_ids"])
    p = padded["prompts"].shape[1]
    resp_real = att[:, p:]
    is_resp = np.concatenate(
        [np.r_[np.zeros(len(r["prompt_ids"]), bool), np.ones(len(r["response_ids"]), bool)] for r in rows]
        or [np.zeros(0, bool)]
    )
    for key in ("response_mask", "old_log_probs", "advantages", "token_level_rewards"):
        assert np.array_equal(padded[key][resp_real], packed[key][is_resp]), key
        assert not packed[key][~is_resp].any(), key
    assert packed["cu_seqlens"][-1] == len(packed["input_ids"]) == int(att.sum())
