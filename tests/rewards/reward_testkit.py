"""Hand-made trajectories and tiny real HTTP servers (a reward model, an OpenAI-compatible judge)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from steplake.rewards import RewardContext, Rollout

JSON = dict[str, Any]


def make_step(
    index: int,
    content: str | None,
    *,
    tid: str = "t1",
    tool_calls: list[JSON] | None = None,
    messages: list[JSON] | None = None,
    n_tokens: int = 5,
    metadata: JSON | None = None,
) -> JSON:
    return {
        "step_id": f"{tid}-s{index}",
        "trajectory_id": tid,
        "group_id": "g1",
        "step_index": index,
        "channel": "train",
        "prompt_ids": [1, 2, 3],
        "response_ids": list(range(n_tokens)),
        "response_logprobs": [-0.5] * n_tokens,
        "token_source": "upstream",
        "messages": messages or [{"role": "user", "content": "What is 6 * 7?"}],
        "tools": None,
        "response": {"content": content, "tool_calls": tool_calls, "reasoning": None},
        "finish_reason": "tool_calls" if tool_calls else "stop",
        "metadata": metadata or {},
    }


def make_ctx(
    answer: str | None,
    ground_truth: Any = None,
    *,
    tid: str = "t1",
    params: JSON | None = None,
    steps: list[JSON] | None = None,
    feedback: list[JSON] | None = None,
    group: list[Rollout] | None = None,
) -> RewardContext:
    traj = {
        "trajectory_id": tid,
        "group_id": "g1",
        "channel": "train",
        "status": "complete",
        "metadata": {} if ground_truth is None else {"ground_truth": ground_truth},
    }
    return RewardContext(
        trajectory=traj,
        steps=steps if steps is not None else [make_step(0, answer, tid=tid)],
        group=group or [],
        feedback=feedback or [],
        params=params or {},
    )


Handler = Callable[[str, JSON], tuple[int, Any]]


@contextmanager
def serve(handler: Handler) -> Iterator[str]:
    """Run ``handler(path, json_body) -> (status, body)`` on 127.0.0.1; yields the base URL."""

    class _H(BaseHTTPRequestHandler):
        def _answer(self, body_in: JSON) -> None:
            status, body = handler(self.path, body_in)
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def do_GET(self) -> None:  # noqa: N802
            self._answer({})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            self._answer({**json.loads(raw), "_headers": dict(self.headers)})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def slow(seconds: float) -> None:
    time.sleep(seconds)
