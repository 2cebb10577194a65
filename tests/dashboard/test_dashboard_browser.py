"""The dashboard in Debian's chromium while a scripted producer feeds a real ``steplake serve``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from .conftest import Server, shoot
from .producer import CHAT_REASON, HOSTILE, IMG, JSLINK, SCRIPT, Producer

pytestmark = pytest.mark.browser

expect: Any = None


@pytest.fixture(autouse=True)
def _expect() -> None:
    global expect
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=20_000)
    expect = pw_expect


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def row(page: Any, tid: str) -> Any:
    return page.locator(f'tr[data-trajectory-id="{tid}"]')


def test_overview_counters_update_live(page: Any, dash_server: Server, producer: Producer) -> None:
    producer.group(uid("ov"), [1.0, 0.0])
    page.goto(dash_server.url + "/#/overview")
    steps_tile = page.locator('[data-counter="Steps"] .tile-value')
    expect(steps_tile).not_to_have_text("–")
    before = int(steps_tile.inner_text().replace(",", ""))
    producer.math_trajectory(uid("ov-live"), uid("ov-g"), 1, 0.5)
    page.wait_for_function(
        "n => Number(document.querySelector('[data-counter=\"Steps\"] .tile-value').textContent.replace(/,/g, '')) > n",
        arg=before)
    expect(page.locator(".chart").first).to_be_visible()
    expect(page.locator('.hbar-row[data-stage="collected"]')).to_be_visible()
    # reward by policy version: a point per version with rewarded trajectories (all of this pool's are v0)
    expect(page.locator('.reward-point[data-version="0"] title')).to_contain_text("v0: mean")
    # the gateway's prompt mode and its steps per mode (this server: the default, chat)
    expect(page.locator('.prompt-modes[data-prompt-mode="chat"]')).to_contain_text("prompt mode chat: 0 on token ids")
    shoot(page, "overview")


def test_new_trajectory_appears_without_reload(page: Any, dash_server: Server, producer: Producer) -> None:
    page.goto(dash_server.url + "/#/trajectories")
    expect(page.locator("#trajectory-table")).to_be_visible()
    page.evaluate("window.__marker = 'same page'")
    tid = uid("live")
    producer.math_trajectory(tid, uid("live-g"), 1, None)
    expect(row(page, tid)).to_be_visible()
    producer.complete(tid, 1.0)
    expect(row(page, tid).locator(".badge.b-complete")).to_be_visible()
    assert page.evaluate("window.__marker") == "same page"  # no reload happened
    shoot(page, "trajectories")


def test_filters_and_search(page: Any, dash_server: Server, producer: Producer) -> None:
    group = uid("flt")
    producer.group(group, [1.0, 0.0])
    page.goto(dash_server.url + f"/#/trajectories?group_id={group}&min_reward=0.5")
    expect(row(page, f"{group}-t0")).to_be_visible()
    expect(row(page, f"{group}-t1")).to_have_count(0)
    page.fill('input[name="q"]', "double it")
    page.press('input[name="q"]', "Enter")
    page.wait_for_function("location.hash.includes('q=double')")
    expect(page.locator("td.empty")).to_be_visible()  # the group has no fork step: no message says "double it"


def test_inspector_shows_messages_tokens_and_fork(page: Any, dash_server: Server, producer: Producer) -> None:
    tid = uid("insp")
    producer.math_trajectory(tid, uid("insp-g"), 1, 1.0, fork=True)
    page.goto(dash_server.url + f"/#/t/{tid}")
    steps = page.locator("section.step")
    expect(steps).to_have_count(3)
    expect(page.get_by_text("What is 17 * 3?").first).to_be_visible()
    expect(page.get_by_text("17 * 3 = 51.").first).to_be_visible()
    expect(page.locator(".tool-call").first).to_contain_text("calculator")
    fork = page.locator('section.step[data-continuity="fork"]')
    expect(fork.locator(".banner-fork")).to_contain_text("shares 10 of")
    # the prompt mode of each step; the reason when it is not tokens
    expect(fork.locator(".prompt-mode")).to_have_attribute("data-prompt-mode", "chat")
    expect(fork.locator(".prompt-reason")).to_have_text(CHAT_REASON)
    first = page.locator('section.step[data-continuity="first"]')
    expect(first.locator(".prompt-mode .badge")).to_have_text("tokens · render")
    expect(page.locator('section.step[data-continuity="clean"] .prompt-mode .badge')).to_have_text("tokens · bridge")
    expect(page.locator(".prompt-reason")).to_have_count(1)
    shoot(page, "inspector")
    fork.locator('.tab[data-tab="tokens"]').click()
    mark = fork.locator(".fork-mark")
    expect(mark).to_have_text("FORK at token 10", timeout=90_000)  # the first view waits for the tokenizer
    tokens = fork.locator(".tok")
    expect(tokens.first).to_be_visible()
    texts = tokens.all_inner_texts()
    assert "<|im_start|>" in texts and " double" in texts, texts[:40]
    assert "id " in (tokens.first.get_attribute("title") or "")
    response = fork.locator(".tok.response")
    expect(response).to_have_count(12)
    assert "logprob" in (response.first.get_attribute("title") or "")
    fork.locator(".shared-toggle").click()
    expect(fork.locator(".tok.shared")).to_have_count(10)
    clean = page.locator('section.step[data-continuity="clean"]')
    clean.locator('.tab[data-tab="tokens"]').click()
    expect(clean.locator(".shared-toggle")).to_contain_text("56 tokens shared with step 0")
    expect(clean.locator(".fork-mark")).to_have_count(0)
    shoot(page, "inspector-tokens")


def test_curating_untrainable_removes_from_next_batch(page: Any, dash_server: Server, producer: Producer) -> None:
    channel = uid("cur")
    group = uid("cur-g")
    tids = [f"{group}-t0", f"{group}-t1"]
    producer.trajectory(tids[0], group, 2, {"agent": "a"}, channel=channel)
    producer.trajectory(tids[1], group, 2, {"agent": "a"}, channel=channel)
    from .producer import math_steps

    for t, r in zip(tids, [1.0, 0.0], strict=True):
        producer.steps(math_steps(t, fork=False))
        producer.complete(t, r)
    page.goto(dash_server.url + f"/#/t/{tids[0]}")
    form = page.locator("aside .curation-form")
    form.locator('select[name="trainable"]').select_option("false")
    form.locator('input[name="tags_add"]').fill("reviewed-in-ui")
    form.locator('input[name="reviewer"]').fill("tester")
    form.locator('button[type="submit"]').click()
    expect(page.locator(".traj-head .badge.b-bad")).to_have_text("not trainable")
    expect(page.locator(".history li").first).to_contain_text("trainable=false")
    shoot(page, "curation")
    batch = httpx.post(dash_server.url + "/api/v1/batches", json={"channel": channel, "groups": 1}, timeout=30).json()
    served = [t["trajectory_id"] for g in batch["groups"] for t in g["trajectories"]]
    assert served == [tids[1]]
    assert batch["excluded"].get("untrainable") == 1


def test_batch_preview_shows_the_api_advantages(page: Any, dash_server: Server, producer: Producer) -> None:
    channel = uid("prev")
    for gi, rewards in enumerate([[1.0, 0.0, 0.5], [0.2, 0.9]]):
        group = f"{channel}-g{gi}"
        for i, r in enumerate(rewards):
            tid = f"{group}-t{i}"
            producer.trajectory(tid, group, len(rewards), {"agent": "b"}, channel=channel)
            from .producer import math_steps

            producer.steps(math_steps(tid, fork=False))
            producer.complete(tid, r)
    page.goto(dash_server.url + "/#/batches")
    page.fill('input[name="channel"]', channel)
    page.select_option('select[name="recipe"]', "grpo")
    page.fill('input[name="groups"]', "4")
    page.click('button[name="preview"]')
    rows = page.locator("#preview-table tbody tr")
    expect(rows).to_have_count(5)
    shown = {r.get_attribute("data-trajectory-id"): float(r.get_attribute("data-advantage") or "nan")
             for r in rows.all()}
    api = httpx.post(dash_server.url + "/api/v1/batches", json={"channel": channel, "groups": 4, "recipe": "grpo",
                     "layout": "step", "dry_run": True, "filters": {"trainable_only": True, "reward_present": True,
                                                                    "drop_zero_variance": False}}, timeout=30).json()
    expected = {t["trajectory_id"]: t["advantage"] for g in api["groups"] for t in g["trajectories"]}
    assert shown.keys() == expected.keys()
    for tid, adv in expected.items():
        assert shown[tid] == pytest.approx(adv, abs=1e-9)
    cells = [c.strip() for c in page.locator("#preview-table td.advantage").all_inner_texts()]
    assert f"{expected[f'{channel}-g0-t0']:.4f}" in cells
    shoot(page, "batch-preview")
    # the preview leased nothing: a real fetch still gets both groups
    batch = httpx.post(dash_server.url + "/api/v1/batches", json={"channel": channel, "groups": 4}, timeout=30).json()
    assert len(batch["groups"]) == 2


def test_export_from_the_ui_reads_back(page: Any, dash_server: Server, producer: Producer) -> None:
    probe = httpx.post(dash_server.url + "/api/v1/exports", json={"format": "jsonl", "channel": "none"}, timeout=30)
    if probe.status_code in (404, 405):
        pytest.skip("POST /api/v1/exports is not served by this build")
    channel = uid("exp")
    group = f"{channel}-g"
    from .producer import math_steps

    for i, r in enumerate([1.0, 0.0]):
        tid = f"{group}-t{i}"
        producer.trajectory(tid, group, 2, {"agent": "e"}, channel=channel)
        producer.steps(math_steps(tid, fork=False))
        producer.complete(tid, r)
    page.goto(dash_server.url + "/#/batches")
    page.fill('input[name="channel"]', channel)
    page.select_option('select[name="format"]', "jsonl")
    page.click('button[name="export"]')
    manifest_el = page.locator("#export-manifest")
    expect(manifest_el).to_be_visible()
    manifest = json.loads(manifest_el.inner_text())
    shoot(page, "export")
    link = page.locator('#export-result a[data-testid="download"]')
    href = link.get_attribute("href")
    assert href and href.startswith("/")
    data = httpx.get(dash_server.url + href, timeout=30)
    assert data.status_code == 200
    rows = [json.loads(line) for line in data.text.splitlines() if line.strip()]
    step_ids = {r["step_id"] for r in rows}
    assert step_ids == {f"{group}-t{i}-s{k}" for i in range(2) for k in range(2)}
    assert manifest["format"] == "jsonl"
    assert manifest.get("counts", {}).get("steps", len(rows)) == len(rows) == 4


def _assert_not_executed(page: Any) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0


def test_hostile_strings_render_as_text(page: Any, dash_server: Server, producer: Producer) -> None:
    channel = uid("hostile")
    tid = uid("hostile")
    producer.hostile(tid, group=f"{tid}-g", channel=channel)
    page.goto(dash_server.url + "/#/overview")
    expect(page.locator('[data-counter="Steps"]')).to_be_visible()
    expect(page.get_by_text(tid)).to_be_visible()
    _assert_not_executed(page)
    page.goto(dash_server.url + f"/#/trajectories?channel={channel}")
    expect(row(page, tid)).to_be_visible()
    expect(row(page, tid)).to_contain_text(JSLINK)
    expect(row(page, tid)).to_contain_text(IMG)
    _assert_not_executed(page)
    page.goto(dash_server.url + f"/#/t/{tid}")
    step = page.locator("section.step").first
    expect(step).to_be_visible()
    for s in HOSTILE:
        expect(page.get_by_text(s, exact=True).first).to_be_attached()
    expect(page.locator(".tool-call b").first).to_have_text(SCRIPT)
    expect(page.locator(".tool-args").first).to_contain_text('"<img src=x onerror=\\"window.__pwned=1\\">"')
    expect(page.locator(".feedback-list")).to_contain_text(IMG)
    expect(page.locator(".history")).to_contain_text(SCRIPT)
    expect(page.locator(".note-text").first).to_contain_text(SCRIPT + IMG + JSLINK)
    for d in page.locator("details").all():
        d.evaluate("d => d.open = true")
    _assert_not_executed(page)
    shoot(page, "hostile-inspector")
    step.locator('.tab[data-tab="tokens"]').click()
    expect(step.locator(".tok").first).to_be_visible(timeout=90_000)
    tokens = "".join(step.locator(".tok-section").first.locator(".tok").all_inner_texts())
    assert SCRIPT in tokens and IMG in tokens and JSLINK in tokens
    step.locator('.tab[data-tab="details"]').click()
    expect(step.locator(".details-grid")).to_contain_text(JSLINK)
    _assert_not_executed(page)
    page.goto(dash_server.url + "/#/batches")
    page.fill('input[name="channel"]', channel)
    page.select_option('select[name="recipe"]', "grpo")
    page.click('button[name="preview"]')
    expect(page.locator("#preview-table")).to_contain_text(SCRIPT)
    _assert_not_executed(page)
    shoot(page, "hostile-batch")
