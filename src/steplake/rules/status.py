"""Trajectory status changes, the idle rule and group readiness (CONTRACT §3).

- A step joins an open trajectory of its group and channel; a step for an ``abandoned`` one reopens it; a
  ``complete`` one takes no more steps.
- **Completion**: an explicit ``complete`` wins. A trajectory idle for ``idle_timeout`` becomes ``complete``
  when its last step ended with ``finish_reason == "stop"`` and no tool calls, otherwise ``abandoned``.
- **Group readiness**: ready when ``n_complete + n_abandoned >= size`` and ``n_complete >= 1``; a
  ``collecting`` group becomes ``ready`` then, a ``ready`` one that stops meeting it (its size grew, a member
  reopened) goes back to ``collecting``. ``leased`` and ``consumed`` groups keep their status.
"""

from __future__ import annotations

from ..errors import ConflictError
from ..records import Step, TrajectoryStatus


def check_step_fits(s: Step, status: str, group_id: str, channel: str) -> bool:
    """The rules a step must meet to join an existing trajectory: not complete, same group, same channel.
    Raises ``ConflictError``; True when the trajectory is abandoned and must reopen."""
    tid = s.trajectory_id
    if status == "complete":
        raise ConflictError(f"trajectory {tid!r} is complete; it takes no more steps", code="trajectory_complete")
    if s.group_id is not None and s.group_id != group_id:
        raise ConflictError(f"trajectory {tid!r} belongs to group {group_id!r}, not {s.group_id!r}",
                            code="group_mismatch")
    if s.channel is not None and s.channel != channel:
        raise ConflictError(f"trajectory {tid!r} is in channel {channel!r}, not {s.channel!r}",
                            code="channel_mismatch")
    return status == "abandoned"


def idle_cutoff(now: float, idle_timeout: float) -> float:
    """Open trajectories last updated before this moment are idle."""
    return now - idle_timeout


def idle_outcome(last_finish_reason: str | None, last_tool_calls: object) -> TrajectoryStatus:
    """The status an idle trajectory takes, from its last step: stopped without tool calls → complete."""
    return "complete" if last_finish_reason == "stop" and not last_tool_calls else "abandoned"


def completed_at(status: str, now: float) -> float | None:
    """``completed_at`` after a change to ``status``: set on complete/abandoned, cleared on reopen."""
    return None if status == "open" else now


def status_deltas(old: str, new: str) -> tuple[int, int]:
    """How a trajectory's change from ``old`` to ``new`` moves its group's ``(n_complete, n_abandoned)``."""
    return (new == "complete") - (old == "complete"), (new == "abandoned") - (old == "abandoned")


def group_ready(size: int, n_complete: int, n_abandoned: int) -> bool:
    return n_complete + n_abandoned >= size and n_complete >= 1


def group_status_after(status: str, size: int, n_complete: int, n_abandoned: int) -> str:
    """A group's status once its counts are ``(size, n_complete, n_abandoned)``."""
    ready = group_ready(size, n_complete, n_abandoned)
    if status == "collecting" and ready:
        return "ready"
    if status == "ready" and not ready:
        return "collecting"
    return status


__all__ = ["check_step_fits", "completed_at", "group_ready", "group_status_after", "idle_cutoff", "idle_outcome",
           "status_deltas"]
