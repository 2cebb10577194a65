"""The demo's closing summary on an 80-column terminal: every URL whole on its label's line, and the truth
about whether the server still serves them (the demo itself needs the model: its printer is tested here)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from steplake.config import build_settings
from steplake.demo import DemoSummary, demo_prompt_mode, not_clean_reason, print_summary


def render(summary: DemoSummary, keep_serving: bool, width: int = 80) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    print_summary(console, summary, keep_serving=keep_serving)
    return buf.getvalue().splitlines()


def summary(url: str) -> DemoSummary:
    return DemoSummary(
        url=url, db="/tmp/steplake-demo-k2j3h4x9/demo.db", log="/tmp/steplake-demo-k2j3h4x9/server.log",
        sdk_rows=[("openai", "8", "16", "5,120", "0.50", "8", "0", "0", "0"),
                  ("anthropic", "8", "16", "5,300", "0.25", "7", "1", "0", "0")],
        batch_rows=[("What is 37*3?", "1 0 1 0", "+0.87 -0.87 +0.87 -0.87")],
        committed=32, excluded={"zero_variance": 1}, later=16, later_clean=15, on_ids=32,
        not_clean={"anthropic realigned: tokens, prompt bridge": 1})


@pytest.mark.parametrize("url", ["http://127.0.0.1:54321",
                                 "http://a-rather-long-public-hostname.internal.example.com:54321/prefix/steplake"])
def test_no_url_is_split_at_80_columns(url: str) -> None:
    lines = render(summary(url), keep_serving=False)
    for label, value in (("Dashboard:", f"{url}/"), ("API:", f"{url}/api/v1/trajectories"),
                         ("OpenAPI:", f"{url}/docs"), ("Database:", "/tmp/steplake-demo-k2j3h4x9/demo.db"),
                         ("Server log:", "/tmp/steplake-demo-k2j3h4x9/server.log")):
        assert any(ln.startswith(label) and ln.rstrip().endswith(value) for ln in lines), (label, lines)
    if len(url) < 40:  # a usual URL: nothing needs the terminal to wrap it either
        assert all(len(ln) <= 80 for ln in lines), lines


def test_the_summary_says_whether_the_urls_still_answer() -> None:
    stopped = "\n".join(render(summary("http://127.0.0.1:8000"), keep_serving=False))
    assert "stops now" in stopped and "steplake demo --keep-serving" in stopped
    assert "steplake serve --db /tmp/steplake-demo-k2j3h4x9/demo.db" in stopped
    kept = "\n".join(render(summary("http://127.0.0.1:8000"), keep_serving=True))
    assert "keeps serving" in kept and "Ctrl-C" in kept and "stops now" not in kept


def test_markup_like_text_is_printed_as_is() -> None:
    s = summary("http://[::1]:8000")
    s.excluded = {"[bold]x[/]": 2}
    text = "\n".join(render(s, keep_serving=True))
    assert "http://[::1]:8000/docs" in text and "[bold]x[/] 2" in text


def test_the_demo_runs_on_token_ids_unless_told_otherwise() -> None:
    assert demo_prompt_mode(build_settings({}, environ={})) == "tokens"
    assert demo_prompt_mode(build_settings({"prompt_mode": "chat"}, environ={})) == "chat"
    assert demo_prompt_mode(build_settings({}, environ={"STEPLAKE_PROMPT_MODE": "auto"})) == "auto"


def test_each_later_step_that_is_not_clean_names_its_reason() -> None:
    def step(index: int, continuity: str, **prov: str) -> dict[str, object]:
        return {"step_index": index, "continuity": continuity, "provenance": prov}
    assert not_clean_reason(step(0, "first", prompt_mode="tokens")) is None
    assert not_clean_reason(step(1, "clean", prompt_mode="tokens", prompt_build="bridge")) is None
    assert not_clean_reason(step(1, "fork", prompt_mode="chat", prompt_mode_reason="--prompt-mode chat")) == \
        "fork: chat mode (--prompt-mode chat)"
    assert not_clean_reason(step(1, "fork", prompt_mode="tokens", prompt_build="render")) == "fork: tokens, prompt render"
    assert "no prompt mode recorded" in (not_clean_reason(step(2, "realigned")) or "")
    s = summary("http://127.0.0.1:8000")
    text = "\n".join(render(s, keep_serving=False))
    assert "prompt mode tokens: 32 steps on token ids; later steps clean 15/16, not clean 1" in text
    assert "  1 x anthropic realigned: tokens, prompt bridge" in text
    s.not_clean, s.later_clean = {}, 16
    assert "later steps clean 16/16, not clean none" in "\n".join(render(s, keep_serving=False))
