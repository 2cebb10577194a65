from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from steplake.errors import ConfigError
from steplake.rewards import RewardConfigError, RewardRegistry, load_reward_spec, score_trajectory
from tests.rewards.reward_testkit import make_ctx

MODULE = """
from steplake.rewards import RewardResult, reward_function

def shortness(ctx):
    return 1.0 if len(ctx.steps[-1]["response"]["content"]) < 10 else 0.0

@reward_function("politeness", version="3")
async def polite(ctx):
    return RewardResult(1.0 if "please" in ctx.steps[-1]["response"]["content"] else 0.0, {"async": True})

class Scaled:
    name = "scaled"
    version = "7"
    async def score(self, ctx):
        return RewardResult(float(ctx.params.get("factor", 1)) * 2)

def broken(ctx):
    raise RuntimeError("boom")

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_rewards_mod.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards_mod"


async def test_resolve_builtins_and_aliases() -> None:
    reg = RewardRegistry()
    assert {
        "final_answer",
        "exact_match",
        "regex_match",
        "format_check",
        "length_penalty",
        "tool_call_success",
        "human_feedback",
        "http_rm",
        "llm_judge",
        "llm_rank",
    } <= set(reg.names())
    assert reg.resolve("http_reward_model").name == "http_rm"
    result = await reg.resolve("final_answer").score(make_ctx("\\boxed{2}", 2))
    assert result.value == 1.0


async def test_resolve_import_paths(user_module: str) -> None:
    reg = RewardRegistry()
    plain = reg.resolve(f"{user_module}:shortness")
    assert (plain.name, plain.version) == ("shortness", "1")
    assert (await plain.score(make_ctx("ok"))).value == 1.0
    decorated = reg.resolve(f"{user_module}:polite")
    assert (decorated.name, decorated.version) == ("politeness", "3")
    assert (await decorated.score(make_ctx("please"))).details == {"async": True}
    cls = reg.resolve(f"{user_module}:Scaled")
    assert (cls.name, cls.version) == ("scaled", "7")
    assert reg.resolve(f"{user_module}:Scaled") is cls  # cached


def test_unknown_names_are_clear_config_errors(user_module: str) -> None:
    reg = RewardRegistry()
    with pytest.raises(RewardConfigError, match="unknown reward function 'nope'.*final_answer"):
        reg.resolve("nope")
    with pytest.raises(RewardConfigError, match="cannot import module"):
        reg.resolve("no_such_module_xyz:f")
    with pytest.raises(RewardConfigError, match="has no attribute"):
        reg.resolve(f"{user_module}:missing")
    with pytest.raises(RewardConfigError, match="neither"):
        reg.resolve(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(ConfigError):  # part of the steplake error tree
        reg.resolve("module:")


def test_register_custom_function() -> None:
    reg = RewardRegistry(builtins=False)
    reg.register(lambda ctx: 0.5, name="half")
    assert reg.names() == ["half"]


def test_load_spec_checks_names_and_params(user_module: str) -> None:
    good = {
        "channels": {
            "train": {
                "functions": [
                    {"name": "final_answer"},
                    {"name": "regex_match", "component": "tagged", "params": {"pattern": "<a>"}},
                    {"name": f"{user_module}:shortness", "weight": 0.5},
                ]
            }
        }
    }
    spec = load_reward_spec(good, RewardRegistry())
    assert spec.for_channel("train").weights == {"final_answer": 1.0, "tagged": 1.0, "shortness": 0.5}
    assert spec.for_channel("val").functions == []
    bad_cases = [
        {"channels": {"train": {"functions": [{"name": "nope"}]}}},
        {"channels": {"train": {"functions": [{"name": "regex_match", "params": {"pattern": "("}}]}}},
        {"channels": {"train": {"functions": [{"name": "length_penalty"}]}}},
        {"channels": {"train": {"functions": [{"name": "http_rm", "params": {"url": "ftp://x"}}]}}},
        {"channels": {"train": {"functions": [{"name": "final_answer"}, {"name": "final_answer"}]}}},
        {"channels": {"train": {"functions": [{"name": "final_answer", "wieght": 2}]}}},
    ]
    for raw in bad_cases:
        with pytest.raises(RewardConfigError):
            load_reward_spec(raw, RewardRegistry())


async def test_score_trajectory_captures_errors(user_module: str) -> None:
    reg = RewardRegistry()
    spec = load_reward_spec(
        {
            "channels": {
                "*": {
                    "functions": [
                        {"name": "final_answer", "weight": 1.0, "version": "2"},
                        {"name": f"{user_module}:broken", "weight": 1.0},
                        {"name": f"{user_module}:Scaled", "weight": 0.25, "params": {"factor": 3}},
                        {"name": "human_feedback", "weight": 1.0},
                    ]
                }
            }
        },
        reg,
    )
    results = await score_trajectory(spec, make_ctx("\\boxed{5}", 5), registry=reg)
    by_name = {r.component: r for r in results}
    assert by_name["final_answer"].value == 1.0 and by_name["final_answer"].version == "2"
    assert by_name["broken"].value is None and "RuntimeError: boom" in (by_name["broken"].error or "")
    assert by_name["Scaled"].value == 6.0 and by_name["Scaled"].version == "7"
    assert by_name["human_feedback"].value is None and by_name["human_feedback"].error is None
    record = by_name["broken"].to_record("t1")
    assert record["name"] == "broken" and record["details"]["error"].startswith("RuntimeError")
