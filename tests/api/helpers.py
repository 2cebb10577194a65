from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from steplake.client import SSEParser


def step(tid: str, index: int, prompt: list[int], response: list[int], **extra: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"trajectory_id": tid, "step_index": index, "prompt_ids": prompt, "response_ids": response,
                         "response_logprobs": [-0.5] * len(response), "finish_reason": "stop"}
    s.update(extra)
    return s


def stream_events_until_end(url: str, key: str, opened: threading.Event, out: dict[str, Any]) -> None:
    """Read ``/api/v1/events`` with ``key`` until the server ends the stream: ``out`` gets the status, the
    parsed events and the monotonic time the stream ended; ``opened`` is set at the first line."""
    parser = SSEParser()
    with httpx.stream("GET", f"{url}/api/v1/events", params={"heartbeat": 30},
                      headers={"authorization": f"Bearer {key}"}, timeout=httpx.Timeout(30.0)) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            opened.set()
            ev = parser.feed(line)
            if ev is not None:
                out.setdefault("events", []).append(ev)
    out["ended_at"] = time.monotonic()
