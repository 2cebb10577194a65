"""Policy publication against the real vLLM (CONTRACT §2, issue 9 item 3): ``POST /api/v1/policy {version,
weights_path}`` makes vLLM serve the new weights (its developer routes: ``/collective_rpc reload_weights``).

Proof: for a fixed chat prompt and a 16-token greedy response, the logprobs vLLM reports (``prompt_logprobs``)
equal within 1e-3 (mean |Δ|) those transformers computes from the saved checkpoint, and the new weights moved
their mean by ≥ 0.5 nats; steps whose upstream call started after the publish carry the new version, earlier
ones (one still in flight when the publish began) the old. A folder vLLM could not load is refused before any
call, vLLM serving on. The tests use a gateway of their own and put the original weights back at the end."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import stop_process
from tests.vllm.conftest import MODEL, Gateway, launch_gateway
from tests.vllm_server import VllmInstall, VllmServer

MESSAGES = [{"role": "system", "content": "You are a careful assistant who answers in full sentences."},
            {"role": "user", "content": "Describe the sea at night to someone who has never seen it, in two or "
                                        "three sentences."}]


@pytest.fixture(scope="module")
def policy_gw(vllm: VllmServer, vllm_install: VllmInstall,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    """A gateway of its own in front of the package's vLLM, and the original weights under its weights root
    (a folder of symlinks: the root check resolves the folder, vLLM follows the files); on the way out the
    original weights are published again so the package's other tests see the original model."""
    gw = launch_gateway(tmp_path_factory.mktemp("policy"), f"vllm+{vllm.base_url}")
    original = gw.weights_root / "original"
    original.mkdir()
    for f in vllm_install.model_dir.iterdir():
        if not f.name.startswith("."):
            (original / f.name).symlink_to(f)
    try:
        yield gw, original
        policy = gw.api("/policy")
        if policy.get("weights_path") not in (None, str(original.resolve())):
            r = publish(gw, int(policy["version"]) + 1, "original")
            assert r.status_code == 200, f"could not put the original weights back: {r.text}"
    finally:
        stop_process(gw.proc)


def publish(gw: Gateway, version: int, path: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/api/v1/policy", json={"version": version, "weights_path": path}, timeout=300)


def next_version(gw: Gateway) -> int:
    return int(gw.api("/policy")["version"]) + 1


def chat(gw: Gateway, tid: str, text: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(f"{gw.url}/t/{tid}/v1/chat/completions", timeout=300,
                      json={"model": MODEL, "messages": [{"role": "user", "content": text}],
                            "max_tokens": max_tokens, "temperature": 0})


def version_of(gw: Gateway, tid: str) -> int:
    deadline = time.monotonic() + 30
    while not (steps := gw.steps(tid)):
        assert time.monotonic() < deadline, f"no step captured for {tid}: {gw.log_tail()}"
        time.sleep(0.1)
    return int(steps[-1]["policy_version"])


def vllm_post(vllm: VllmServer, path: str, body: dict[str, Any]) -> Any:
    r = httpx.post(f"{vllm.base_url}{path}", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def fixed_sequence(vllm: VllmServer) -> tuple[list[int], list[int]]:
    """The chat prompt's ids (vLLM's ``/tokenize``) and 16 greedy response ids."""
    prompt = vllm_post(vllm, "/tokenize", {"model": MODEL, "messages": MESSAGES,
                                           "add_generation_prompt": True})["tokens"]
    out = vllm_post(vllm, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 16,
                                              "temperature": 0, "ignore_eos": True, "return_token_ids": True})
    response = out["choices"][0]["token_ids"]
    assert len(prompt) >= 40 and len(response) == 16, (len(prompt), response)
    return prompt, response


def vllm_logprobs(vllm: VllmServer, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
    """vLLM's logprob of each response id given everything before it (one prefill, ``prompt_logprobs``)."""
    out = vllm_post(vllm, "/v1/completions", {"model": MODEL, "prompt": [*prompt, *response], "max_tokens": 1,
                                              "temperature": 0, "prompt_logprobs": 0})
    choice = out["choices"][0]
    entries = choice.get("prompt_logprobs") or out["prompt_logprobs"]
    return [float(entries[len(prompt) + i][str(t)]["logprob"]) for i, t in enumerate(response)]


def hf_logprobs(folder: Path, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
    """The same logprobs from transformers (float32, one forward pass) over the checkpoint in ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ids = torch.tensor([[*prompt, *response]])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1]
    lp = torch.log_softmax(logits.double(), dim=-1).gather(1, torch.tensor(response)[:, None])[:, 0]
    return [float(x) for x in lp]


def write_scaled_checkpoint(model_dir: Path, out: Path, factor: float = 1.5) -> None:
    """The served model with every attention ``v_proj`` scaled by ``factor``, saved as safetensors with its
    ``lm_head.weight`` (the model is untied) and the tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        scaled = [p.mul_(factor) for n, p in model.named_parameters() if n.endswith("v_proj.weight")]
    assert len(scaled) == model.config.num_hidden_layers
    model.save_pretrained(str(out), safe_serialization=True)
    for f in model_dir.iterdir():
        if not f.name.startswith(".") and f.suffix != ".safetensors" and not (out / f.name).exists():
            shutil.copy(f, out / f.name)


def mean_abs(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def assert_vllm_serving(vllm: VllmServer, gw: Gateway, tid: str) -> None:
    assert httpx.get(f"{vllm.base_url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{vllm.base_url}/is_paused", timeout=30).json() == {"is_paused": False}
    r = chat(gw, tid, "Still there?")
    assert r.status_code == 200, r.text


def test_a_folder_vllm_cannot_load_is_refused_and_vllm_serves_on(
        vllm: VllmServer, policy_gw: tuple[Gateway, Path]) -> None:
    import torch
    from safetensors.torch import save_file

    gw, original = policy_gw
    before = gw.api("/policy")
    weight_version = httpx.get(f"{vllm.base_url}/weight_info", timeout=30).json()
    no_config = gw.weights_root / "no-config"  # the real tensors, no config.json
    no_config.mkdir()
    (no_config / "model.safetensors").symlink_to((original / "model.safetensors").resolve())
    no_head = gw.weights_root / "no-head"  # the untied config, tensors without lm_head.weight
    no_head.mkdir()
    shutil.copy(original / "config.json", no_head / "config.json")
    save_file({"model.embed_tokens.weight": torch.zeros(4, 4)}, str(no_head / "model.safetensors"))
    for name, problem in (("no-config", "config.json"), ("no-head", "lm_head.weight"), ("absent", "no such folder")):
        r = publish(gw, next_version(gw), name)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "weights_path_invalid" and problem in err["message"], err
        assert vllm.base_url in err["message"], err  # names the upstream
        assert gw.api("/policy") == before
        assert_vllm_serving(vllm, gw, f"refused-{name}")
    assert httpx.get(f"{vllm.base_url}/weight_info", timeout=30).json() == weight_version  # never called


def test_a_publish_makes_vllm_serve_the_new_weights(
        vllm: VllmServer, vllm_install: VllmInstall, policy_gw: tuple[Gateway, Path]) -> None:
    gw, original = policy_gw
    prompt, response = fixed_sequence(vllm)
    lp_original = vllm_logprobs(vllm, prompt, response)
    hf_original = hf_logprobs(vllm_install.model_dir, prompt, response)
    assert mean_abs(lp_original, hf_original) <= 1e-3
    v2 = gw.weights_root / "v2"
    write_scaled_checkpoint(vllm_install.model_dir, v2)

    old = int(gw.api("/policy")["version"])
    assert chat(gw, "pv-before", "Hello before the publish").status_code == 200
    in_flight: dict[str, Any] = {}
    slow = threading.Thread(target=lambda: in_flight.update(r=chat(gw, "pv-in-flight", "Tell me a story.", 48)))
    slow.start()
    time.sleep(1.0)  # its upstream call has started: the publish waits for it, and it keeps the old version
    r = publish(gw, old + 1, "v2")
    assert r.status_code == 200, r.text
    assert not slow.is_alive() and in_flight["r"].status_code == 200
    [up] = r.json()["gateway"]["upstreams"]
    assert up["kind"] == "vllm" and up["reloaded"] is True, up
    assert chat(gw, "pv-after", "Hello after the publish").status_code == 200
    assert version_of(gw, "pv-before") == old and version_of(gw, "pv-in-flight") == old
    assert version_of(gw, "pv-after") == old + 1
    assert httpx.get(f"{vllm.base_url}/weight_info", timeout=30).json() == {"weight_version": str(old + 1)}

    lp_new = vllm_logprobs(vllm, prompt, response)
    hf_new = hf_logprobs(v2, prompt, response)
    delta = mean_abs(lp_new, hf_new)
    moved = abs(sum(lp_new) / 16 - sum(lp_original) / 16)
    print(f"\nvLLM vs transformers (original): mean |Δ| = {mean_abs(lp_original, hf_original):.3g}; after the "
          f"publish (v_proj x1.5): mean |Δ| = {delta:.3g}; mean logprob moved by {moved:.3f} nats "
          f"({sum(lp_original) / 16:.3f} -> {sum(lp_new) / 16:.3f}); prompt {len(prompt)} ids")
    assert delta <= 1e-3
    assert moved >= 0.5

    r = publish(gw, old + 2, "original")  # back to the original weights, for the package's other tests
    assert r.status_code == 200, r.text
    assert mean_abs(vllm_logprobs(vllm, prompt, response), lp_original) <= 1e-4
