"""What a new user reads on the dashboard: the sign-in hint matches real keys, overview tiles never cut their
text, counts agree with their nouns ("1 step", "2 steps")."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from steplake.store.sqlite import SqliteStore

from .conftest import Server
from .producer import Producer, math_steps

STATIC = Path(__file__).resolve().parents[2] / "src" / "steplake" / "dashboard" / "static"


def test_the_sign_in_placeholder_looks_like_an_admin_key(tmp_path: Path) -> None:
    html = (STATIC / "index.html").read_text()
    m = re.search(r'id="signin-key"[^>]*placeholder="([^"]*)"', html)
    assert m, "no sign-in key field"
    store = SqliteStore(tmp_path / "pool.db")
    store.open()
    try:
        _, secret = store.create_key("admin", None)
    finally:
        store.close()
    assert secret.startswith(m.group(1).rstrip("…")), (m.group(1), secret[:9])


@pytest.mark.browser
def test_overview_tiles_wrap_instead_of_cutting(page: Any, dash_server: Server, producer: Producer) -> None:
    page.set_viewport_size({"width": 900, "height": 900})  # tiles at their narrowest (118 px)
    page.goto(dash_server.url + "/#/overview")
    page.wait_for_selector('[data-counter="Capture errors"] .tile-sub')
    cut = page.evaluate("""() => [...document.querySelectorAll('.tile-label, .tile-sub, .tile-value')]
        .filter((el) => el.scrollWidth > el.clientWidth + 1 || getComputedStyle(el).textOverflow === 'ellipsis')
        .map((el) => el.textContent)""")
    assert cut == [], f"tile text cut off: {cut}"


@pytest.mark.browser
def test_counts_agree_with_their_nouns(page: Any, dash_server: Server, producer: Producer) -> None:
    page.goto(dash_server.url + "/#/overview")
    words = page.evaluate("""async () => {
        const { plural } = await import('/static/js/dom.js');
        return [plural(0, 'step'), plural(1, 'step'), plural(2, 'step'), plural(1, 'reward record'),
                plural(12345, 'token'), plural(1, 'entry', 'entries'), plural(3, 'entry', 'entries')];
    }""")
    assert words == ["0 steps", "1 step", "2 steps", "1 reward record", "12.3k tokens", "1 entry", "3 entries"]
    tid = f"one-{uuid.uuid4().hex[:8]}"  # a trajectory of one step, newest: first in the overview's list
    producer.trajectory(tid, f"g-{tid}", 1)
    producer.steps(math_steps(tid)[:1])
    page.reload()
    cell = page.locator("tr", has_text=tid[:12]).locator("td.num").first
    cell.wait_for()
    assert cell.inner_text() == "1 step"
