"""Names shared by the model modules; importing this module is cheap (no torch)."""

from __future__ import annotations

from typing import Literal

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
LogprobsMode = Literal["raw", "processed"]
LOGPROBS_MODES: tuple[str, ...] = ("raw", "processed")

__all__ = ["GGUF_NAME", "DEFAULT_MODEL_NAME", "LogprobsMode", "LOGPROBS_MODES"]
