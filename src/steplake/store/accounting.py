"""Per-append bookkeeping shared by the stores: trajectory deltas and counters for one appended step (the
rule a step must meet to join a trajectory is ``rules.status.check_step_fits``)."""

from __future__ import annotations

from ..records import Step
from ..types import Json


def account_step(tdelta: dict[str, Json], counts: dict[str, int], s: Step, tid: str, index: int,
                 next_index: int, continuity: str, shared: int, policy: int) -> None:
    """Fold one stored step into its trajectory's pending update and the store's counters."""
    d = tdelta.setdefault(tid, {"n": 0, "next": 0, "tokens": 0, "realigned": 0, "fork": 0, "finish": None,
                                "tools": None, "xhash": None, "pmin": policy, "pmax": policy})
    d["n"] += 1
    d["next"] = max(d["next"], index + 1)
    d["tokens"] += len(s.prompt_ids) - shared + len(s.response_ids)
    d["realigned"] += continuity == "realigned"
    d["fork"] += continuity == "fork"
    if index + 1 >= next_index:  # the trajectory's last step so far: what the idle rule looks at
        d["finish"], d["tools"] = s.finish_reason, int(bool(s.response and s.response.tool_calls))
        d["xhash"] = s.provenance.get("exchange_hash") or d["xhash"]
    d["pmin"], d["pmax"] = min(d["pmin"], policy), max(d["pmax"], policy)
    counts["steps"] += 1
    counts[f"continuity_{continuity}"] = counts.get(f"continuity_{continuity}", 0) + 1
    counts["prompt_tokens"] += len(s.prompt_ids)
    counts["response_tokens"] += len(s.response_ids)


__all__ = ["account_step"]
