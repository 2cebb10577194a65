"""Types shared by every layer (the ground floor: imports nothing from steplake).

``Json`` is a JSON object as it travels between the layers (request bodies, records, answers).
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

__all__ = ["Json"]
