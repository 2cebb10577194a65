from __future__ import annotations

from typing import Any


def step(tid: str, index: int, prompt: list[int], response: list[int], **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"trajectory_id": tid, "step_index": index, "prompt_ids": prompt, "response_ids": response,
                         "response_logprobs": [-0.5] * len(response), "finish_reason": "stop"}
    s.update(extra)
    return s
