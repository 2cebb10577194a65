from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.servers import asgi_client, make_app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (lifespan run), gateway off, on a SqliteStore file in tmp_path."""
    async with asgi_client(make_app(tmp_path)) as c:
        yield c
