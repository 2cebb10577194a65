"""Adapters: verl (fallback container), Hugging Face datasets, TRL DPO rows."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from steplake.batches import VerlBatch, apply_recipe, to_hf_dataset, to_trl_dpo_rows, to_verl
from tests.batches.batches_pool import clean_three_step_trajectory, single_step_group, step, trajectory

VERL_TENSOR_KEYS = {
    "prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "old_log_probs",
    "advantages", "token_level_rewards", "token_level_scores", "rewards", "has_log_probs", "prompt_lens",
    "response_lens",
}  # fmt: skip


def grpo_batch() -> dict:
    res = apply_recipe("grpo", [single_step_group("g", [1, 0]), single_step_group("h", [0, 0, 1])])
    return {"batch_id": "b1", "lease_expires_at": 123.0, **res.to_dict()}


@pytest.mark.skipif(
    importlib.util.find_spec("verl") is not None, reason="verl installed: DataProto is returned"
)
def test_to_verl_fallback_container() -> None:
    torch = pytest.importorskip("torch")
    out = to_verl(grpo_batch(), pad_token_id=0)
    assert isinstance(out, VerlBatch) and len(out) == 5
    keys = set(out.batch.keys())
    assert keys == VERL_TENSOR_KEYS
    if importlib.util.find_spec("tensordict") is None:
        assert isinstance(out.batch, dict)
    assert out.batch["input_ids"].shape == (5, 5) and out.batch["input_ids"].dtype == torch.int64
    assert torch.equal(out.batch["token_level_scores"], out.batch["token_level_rewards"])
    # grpo [1, 0]: ±0.5 / (sqrt(0.5) + 1e-6) on every response token
    assert out.batch["advantages"][0].tolist() == pytest.approx([0.7071058] * 2, abs=1e-6)
    assert list(out.non_tensor_batch["uid"]) == ["g", "g", "h", "h", "h"]
    assert list(out.non_tensor_batch["trajectory_id"]) == ["g-t0", "g-t1", "h-t0", "h-t1", "h-t2"]
    assert all(isinstance(v, np.ndarray) and v.dtype == object for v in out.non_tensor_batch.values())
    meta = out.meta_info
    assert (meta["batch_id"], meta["layout"], meta["recipe"], meta["batch_size"]) == ("b1", "step", "grpo", 5)
    assert meta["summary"]["step_rows"] == 5 and meta["lease_expires_at"] == 123.0


def test_to_verl_drops_what_the_trainer_must_compute() -> None:
    pytest.importorskip("torch")
    no_lp = trajectory("n", 1.0, [step("n0", "n", 0, [1], [2], logprobs=None)])
    res = apply_recipe("ppo", [{"group_id": "g", "trajectories": [no_lp]}])
    out = to_verl(res.to_dict())
    assert "old_log_probs" not in out.batch  # verl recomputes them
    assert "advantages" not in out.batch  # ppo: GAE in the trainer
    assert out.batch["token_level_rewards"].tolist() == [[1.0]]


def test_to_verl_trajectory_layout() -> None:
    pytest.importorskip("torch")
    res = apply_recipe("grpo", [{"group_id": "g", "trajectories": [clean_three_step_trajectory()]}])
    out = to_verl(res.to_dict(), layout="trajectory")
    assert out.batch["response_mask"][0].tolist() == [1, 1, 0, 0, 1, 1, 1, 0, 1]
    assert out.meta_info["summary"]["trajectory_rows"] == 1
    assert out.non_tensor_batch["step_ids"][0] == ["c-s0", "c-s1", "c-s2"]


def test_to_hf_dataset_rows() -> None:
    pytest.importorskip("datasets")
    forked = trajectory(
        "f", 0.0, [step("f0", "f", 0, [1, 2], [7]), step("f1", "f", 1, [5], [9], continuity="fork")]
    )
    res = apply_recipe("grpo", [{"group_id": "g", "trajectories": [clean_three_step_trajectory(), forked]}])
    ds = to_hf_dataset(res.to_dict(), layout="trajectory")
    assert ds.num_rows == 3
    assert {"prompt_ids", "response_ids", "response_mask", "advantage", "group_id", "layout"} <= set(
        ds.column_names
    )
    assert ds[0]["response_mask"] == [1, 1, 0, 0, 1, 1, 1, 0, 1] and ds[0]["step_index"] is None
    assert [ds[i]["layout"] for i in range(3)] == ["trajectory", "step", "step"]
    assert ds[2]["step_id"] == "f1" and ds[2]["response_ids"] == [9]
    assert to_hf_dataset(res.groups).num_rows == 5  # step layout: 3 + 2 steps


def test_to_trl_dpo_rows() -> None:
    res = apply_recipe("dpo", [single_step_group("g", [0, 1])])
    rows = to_trl_dpo_rows(res.to_dict())
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "task of g"}],
            "chosen": [{"role": "assistant", "content": "answer g-t1-s0"}],
            "rejected": [{"role": "assistant", "content": "answer g-t0-s0"}],
            "prompt_input_ids": [1, 2, 3],
            "chosen_input_ids": [11, 2],
            "rejected_input_ids": [10, 2],
            "chosen_reward": 1.0,
            "rejected_reward": 0.0,
            "group_id": "g",
            "source": "reward",
        }
    ]
    assert to_trl_dpo_rows(res.pairs) == rows


def test_to_trl_dpo_rows_multi_step() -> None:
    t = clean_three_step_trajectory(reward=1.0)
    t["steps"][2]["messages"] = [{"role": "user", "content": "task of g"}, {"role": "tool", "content": "42"}]
    bad = trajectory("b", 0.0, [step("b0", "b", 0, [1, 2, 3], [17])])
    (row,) = to_trl_dpo_rows(apply_recipe("dpo", [{"group_id": "g", "trajectories": [t, bad]}]).pairs)
    assert row["chosen_input_ids"] == [10, 11, 20, 21, 12, 13, 14, 30, 15]
    assert row["chosen"] == [
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "answer c-s2"},
    ]
    assert row["rejected_input_ids"] == [17]
