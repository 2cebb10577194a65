"""Policy publication to vLLM-kind upstreams (CONTRACT §2), against the fake upstream's copy of vLLM's developer
routes: the call sequence, the dev-mode hint when those routes are off (404), the checkpoint checks made
before any upstream is called, and the rollback. The real vLLM is exercised in tests/vllm/test_policy_vllm.py."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import free_port
from tests.gateway.fake_upstream import FakeUpstreamThread
from tests.gateway.test_policy_publish import chat, serve, version_of


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstreamThread]]:
    made = [FakeUpstreamThread(free_port()).start() for _ in range(2)]
    yield made
    for f in made:
        f.stop()


def write_checkpoint(folder: Path, tensors: Sequence[str] = ("model.embed_tokens.weight", "lm_head.weight"),
                     tie: bool | None = False, config: bool = True, cut: int = 0) -> str:
    """A tiny Hugging Face folder: ``config.json`` and one ``model.safetensors`` (2 float32 per tensor),
    ``cut`` bytes short of what its header says."""
    folder.mkdir(parents=True)
    if config:
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", **(
            {} if tie is None else {"tie_word_embeddings": tie})}))
    header = orjson.dumps({n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]}
                           for i, n in enumerate(tensors)})
    data = len(header).to_bytes(8, "little") + header + bytes(8 * len(tensors))
    (folder / "model.safetensors").write_bytes(data[:len(data) - cut])
    return str(folder.resolve())


def publish(url: str, version: int, path: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/policy", json={"version": version, "weights_path": path}, timeout=30)


def test_a_vllm_without_dev_mode_fails_the_publish_with_the_hint(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a = fakes[0]
    a.fake.dev_mode = False
    root = tmp_path / "ckpt"
    p1 = write_checkpoint(root / "step-1")
    with serve(tmp_path, [f"vllm+{a.url}"], weights_root=str(root)) as url:
        r = publish(url, 1, p1)
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "policy_reload_failed"
        assert "VLLM_SERVER_DEV_MODE=1" in err["message"] and a.url in err["message"]
        [res] = err["details"]["upstreams"]
        assert res["kind"] == "vllm" and res["reloaded"] is False and "VLLM_SERVER_DEV_MODE=1" in res["detail"]
        assert a.fake.dev_calls == ["/pause wait", "/resume None"]  # resumed even though the pause failed
        assert httpx.get(f"{url}/api/v1/policy").json()["version"] == 0
        assert chat(url, "still served", "t-old").status_code == 200 and version_of(url, "t-old") == 0


def test_a_vllm_reload_pauses_reloads_resets_versions_and_resumes(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a = fakes[0]
    root = tmp_path / "ckpt"
    p1 = write_checkpoint(root / "step-1")
    with serve(tmp_path, [f"vllm+{a.url}"], weights_root=str(root)) as url:
        assert chat(url, "before", "t-before").status_code == 200
        r = publish(url, 1, "step-1")
        assert r.status_code == 200, r.text
        assert r.json()["gateway"]["upstreams"][0]["reloaded"] is True
        assert a.fake.dev_calls == ["/pause wait", f"/collective_rpc {p1}", "/reset_prefix_cache None",
                                    "/update_weight_version 1", "/resume None"]
        assert chat(url, "after", "t-after").status_code == 200
        assert version_of(url, "t-before") == 0 and version_of(url, "t-after") == 1


@pytest.mark.parametrize("name, make, problem", [
    ("no-config", lambda d: write_checkpoint(d, config=False), "config.json"),
    ("no-head", lambda d: write_checkpoint(d, tensors=["model.embed_tokens.weight"]), "lm_head.weight"),
    ("truncated", lambda d: write_checkpoint(d, cut=4), "truncated"),
    ("no-weights", lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), "safetensors"),
    ("missing", lambda d: None, "no such folder"),
])
def test_a_checkpoint_vllm_cannot_load_is_refused_before_any_call(
        tmp_path: Path, fakes: list[FakeUpstreamThread], name: str, make: object, problem: str) -> None:
    a = fakes[0]
    root = tmp_path / "ckpt"
    root.mkdir()
    make(root / name)  # type: ignore[operator]
    with serve(tmp_path, [f"vllm+{a.url}"], weights_root=str(root)) as url:
        r = publish(url, 1, name)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "weights_path_invalid" and problem in err["message"] and a.url in err["message"]
        assert a.fake.dev_calls == [] and httpx.get(f"{url}/api/v1/policy").json()["version"] == 0


def test_a_tied_checkpoint_needs_no_head_and_an_untied_one_does(tmp_path: Path) -> None:
    from steplake.gateway.reload import checkpoint_problem

    tied = write_checkpoint(tmp_path / "tied", tensors=["model.embed_tokens.weight"], tie=True)
    unknown = write_checkpoint(tmp_path / "unknown", tensors=["model.embed_tokens.weight"], tie=None)
    assert checkpoint_problem(tied) is None and checkpoint_problem(unknown) is None
    served_untied = write_checkpoint(tmp_path / "served")
    assert "lm_head.weight" in str(checkpoint_problem(unknown, served_untied))  # the served model is untied
    assert "absolute" in str(checkpoint_problem("relative/path"))


def test_a_failed_vllm_reload_rolls_the_other_back_to_the_previous_weights(
        tmp_path: Path, fakes: list[FakeUpstreamThread]) -> None:
    a, b = fakes
    root = tmp_path / "ckpt"
    p1, p2 = write_checkpoint(root / "step-1"), write_checkpoint(root / "step-2")
    with serve(tmp_path, [f"vllm+{a.url}", f"vllm+{b.url}"], weights_root=str(root)) as url:
        assert publish(url, 1, p1).status_code == 200
        a.fake.dev_calls.clear()
        b.fake.dev_calls.clear()
        b.fake.reload_fails = "Worker failed with error"
        r = publish(url, 2, p2)
        assert r.status_code == 502 and r.json()["error"]["code"] == "policy_reload_failed"
        by_url = {u["url"]: u for u in r.json()["error"]["details"]["upstreams"]}
        assert by_url[a.url]["rolled_back"] is True and "Worker failed" in by_url[b.url]["detail"]
        assert b.fake.dev_calls == ["/pause wait", f"/collective_rpc {p2}", "/resume None"]
        assert a.fake.dev_calls[-5:] == ["/pause wait", f"/collective_rpc {p1}", "/reset_prefix_cache None",
                                         "/update_weight_version 1", "/resume None"]
        assert a.fake.reloaded == [p1, p2, p1] and httpx.get(f"{url}/api/v1/policy").json()["version"] == 1
