"""Hand-made batch data for the batches tests (plain dicts shaped like CONTRACT §4 answers)."""

from __future__ import annotations

from typing import Any


def step(
    step_id: str,
    trajectory_id: str,
    index: int,
    prompt: list[int],
    response: list[int],
    *,
    group_id: str = "g",
    logprobs: list[float] | None | str = "auto",
    continuity: str | None = "auto",
    reward: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Step dict; logprobs default to -0.1 * (position + 1), continuity to first/clean by index."""
    if logprobs == "auto":
        logprobs = [-0.1 * (i + 1) for i in range(len(response))]
    if continuity == "auto":
        continuity = "first" if index == 0 else "clean"
    return {
        "step_id": step_id,
        "trajectory_id": trajectory_id,
        "group_id": group_id,
        "step_index": index,
        "prompt_ids": prompt,
        "response_ids": response,
        "response_logprobs": logprobs,
        "continuity": continuity,
        "parent_step_id": None,
        "shared_prefix_len": 0,
        "reward": reward,
        "policy_version": 1,
        "finish_reason": "stop",
        "messages": [{"role": "user", "content": f"task of {group_id}"}],
        "response": {"content": f"answer {step_id}", "tool_calls": None, "reasoning": None},
        "metadata": {},
        "token_source": "upstream",
        **extra,
    }


def trajectory(
    trajectory_id: str, reward: float | None, steps: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "trajectory_id": trajectory_id,
        "reward": reward,
        "advantage": None,
        "reward_components": {},
        "metadata": {},
        "curation": {"quality": "unreviewed", "trainable": True, "tags": [], "note": None},
        "status": "complete",
        "steps": steps,
        **extra,
    }


def single_step_group(
    group_id: str, rewards: list[float | None], prompt: list[int] | None = None
) -> dict[str, Any]:
    """A group of one-step trajectories ``{group_id}-t{i}`` with the given rewards and a shared prompt."""
    prompt = prompt if prompt is not None else [1, 2, 3]
    trajs = []
    for i, r in enumerate(rewards):
        tid = f"{group_id}-t{i}"
        trajs.append(trajectory(tid, r, [step(f"{tid}-s0", tid, 0, prompt, [10 + i, 2], group_id=group_id)]))
    return {"group_id": group_id, "trajectories": trajs}


def clean_three_step_trajectory(reward: float = 1.0) -> dict[str, Any]:
    """A 3-step clean trajectory built by hand.

    step 0: prompt [1, 2, 3]                             response [10, 11]
    step 1: prompt [1, 2, 3, 10, 11, 20, 21]             response [12, 13, 14]   (20, 21: a tool result)
    step 2: prompt [1, 2, 3, 10, 11, 20, 21, 12, 13, 14, 30]  response [15]      (30: a user turn)
    Step 1 has a step reward of 0.25.
    """
    s0 = step("c-s0", "c", 0, [1, 2, 3], [10, 11], logprobs=[-1.0, -2.0])
    s1 = step(
        "c-s1", "c", 1, [1, 2, 3, 10, 11, 20, 21], [12, 13, 14], logprobs=[-3.0, -4.0, -5.0], reward=0.25
    )
    s2 = step("c-s2", "c", 2, [1, 2, 3, 10, 11, 20, 21, 12, 13, 14, 30], [15], logprobs=[-6.0])
    s1["parent_step_id"], s2["parent_step_id"] = "c-s0", "c-s1"
    return trajectory("c", reward, [s0, s1, s2])
