"""Secrets of reward configurations stay out of records (rewards/secrets.py)."""

from __future__ import annotations

from steplake.rewards import load_reward_spec, score_trajectory
from steplake.rewards.secrets import MASK, config_sha256, redact_params, redact_reward, scrub, secret_values
from tests.rewards.reward_testkit import make_ctx

PARAMS = {"url": "https://user:pw-in-url@rm.example/score?api_key=q-key&x=1", "api_key": "sk-live-123",
          "headers": {"X-Org-Token": "hdr-tok-9", "Accept": "text/plain"}, "max_tokens": 256, "model": "m"}


def test_secret_values_and_redaction() -> None:
    assert secret_values(PARAMS) == {"pw-in-url", "q-key", "sk-live-123", "hdr-tok-9", "text/plain"}
    shown = redact_params(PARAMS)
    assert shown["api_key"] == MASK and shown["headers"] == {"X-Org-Token": MASK, "Accept": MASK}
    assert shown["url"] == f"https://user:{MASK}@rm.example/score?api_key={MASK}&x=1"
    assert shown["max_tokens"] == 256 and shown["model"] == "m"  # ordinary parameters are kept
    assert scrub({"error": "401 for key sk-live-123", "n": [1, "hdr-tok-9"]}, secret_values(PARAMS)) == {
        "error": f"401 for key {MASK}", "n": [1, MASK]}


def test_config_hash_ignores_the_secret_but_not_the_configuration() -> None:
    h = config_sha256("http_rm", "rm", "1", PARAMS)
    assert h == config_sha256("http_rm", "rm", "1", {**PARAMS, "api_key": "sk-rotated"})
    assert h != config_sha256("http_rm", "rm", "1", {**PARAMS, "max_tokens": 512})
    assert h != config_sha256("http_rm", "rm", "2", PARAMS) and len(h) == 64


def test_records_name_the_function_never_its_params() -> None:
    old = {"id": 1, "details": {"function": "http_rm", "params": {"api_key": "sk-live-123", "url": "http://x"}}}
    assert redact_reward(old)["details"]["params"] == {"api_key": MASK, "url": "http://x"}
    assert redact_reward({"id": 2, "details": {"value": 1}}) == {"id": 2, "details": {"value": 1}}


async def test_a_failing_function_does_not_leak_its_key() -> None:
    spec = load_reward_spec({"channels": {"train": {"functions": [
        {"name": "http_rm", "component": "rm",
         "params": {"url": "http://127.0.0.1:9/score?token=tok-in-query", "api_key": "sk-live-123"}}]}}})
    (result,) = await score_trajectory(spec, make_ctx("42", 42))
    record = result.to_record("t")
    text = str(record)
    assert result.value is None and result.error and "tok-in-query" not in text and "sk-live-123" not in text
    assert "params" not in record["details"] and record["details"]["config_sha256"] == \
        spec.channels["train"].functions[0].config_sha256
