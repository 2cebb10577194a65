"""Real training signal: a GRPO batch from gateway-captured steps drives one optimizer step of the embedded
model (torch, CPU).

The embedded model server (session fixture ``model_server``) samples; the steplake server (uvicorn in a
thread, real SQLite file) proxies the ``openai`` SDK's calls and captures the exact ids and logprobs; the
trainer side asks ``POST /api/v1/batches`` for a GRPO batch, tensorizes it with torch, loads the same GGUF
weights in-process and checks that (1) the captured logprobs equal the recomputed ones within 1e-3 and
(2) one step of :func:`steplake.train.grpo_loss` raises the mean logprob of the positive-advantage
responses and lowers that of the negative-advantage ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from steplake.batches import tensorize  # noqa: E402
from steplake.train import grpo_loss, recompute_logprobs  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.procs import serve_app  # noqa: E402

pytestmark = pytest.mark.slow

N = 4
REWARDS = [1.0, 1.0, 0.0, 0.0]  # hand-assigned: two positive, two negative advantages
PROMPT = "Name a colour."


@pytest.fixture(scope="module")
def steplake_url(model_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The steplake app (API + gateway) in a uvicorn thread, its upstream the embedded model server."""
    from steplake.app import create_app
    from steplake.config import Settings

    port = free_port()
    db = tmp_path_factory.mktemp("grpo") / "pool.db"
    app = create_app(Settings(db=str(db), port=port, upstream=[model_server], capture_sync=True))
    with serve_app(app, port, ready_path=None, join=15) as url:
        yield url


@pytest.fixture(scope="module")
def policy() -> Any:
    """The same weights the model server samples from, float32, in this process: a copy of its own (the
    session's ``local_model`` is shared with other tests and must not be trained)."""
    from transformers import AutoModelForCausalLM

    from steplake.model import find_default_gguf

    torch.manual_seed(0)
    gguf = Path(find_default_gguf())
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 local_files_only=True)
    return model.to("cpu")


def collect_group(api: httpx.Client) -> str:
    """Four rollouts through the gateway (one per trajectory base_url), completed with fixed rewards."""
    r = api.post("/api/v1/groups", json={"n": N, "metadata": {"task": "colour"}})
    assert r.status_code == 201, r.text
    group = r.json()
    for i, traj in enumerate(group["trajectories"]):
        agent = openai.OpenAI(base_url=traj["base_url"], api_key="unused", max_retries=0, timeout=120)
        out = agent.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": PROMPT}], temperature=1.0, max_tokens=12,
            seed=1234 + i)
        assert out.choices[0].message.content is not None
        done = api.post(f"/api/v1/trajectories/{traj['trajectory_id']}/complete", json={"reward": REWARDS[i]})
        assert done.is_success, done.text
    return str(group["group_id"])


def fetch_batch(api: httpx.Client, group_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:  # captures commit in the background; the group is ready once all 4 are complete
        r = api.post("/api/v1/batches", json={"recipe": "grpo", "groups": 1, "wait_seconds": 5})
        assert r.status_code == 200, r.text
        batch = r.json()
        if batch["groups"]:
            break
        assert time.monotonic() < deadline, f"no ready group: {batch}"
    assert [g["group_id"] for g in batch["groups"]] == [group_id]
    return dict(batch)


def side_means(logprobs: Any, tensors: dict[str, Any]) -> tuple[float, float]:
    """Mean logprob over the response tokens of positive-, then negative-advantage rows."""
    mask = tensors["response_mask"].bool()
    adv = tensors["advantages"]
    row_adv = (adv * mask).sum(1) / mask.sum(1).clamp(min=1)
    out = []
    for rows in (row_adv > 0, row_adv < 0):
        m = mask & rows[:, None]
        assert m.any()
        out.append(float(logprobs[m].mean()))
    return out[0], out[1]


def test_grpo_batch_drives_one_optimizer_step(steplake_url: str, policy: Any) -> None:
    with httpx.Client(base_url=steplake_url, timeout=120) as api:
        group_id = collect_group(api)
        batch = fetch_batch(api, group_id)
        trajs = batch["groups"][0]["trajectories"]
        assert len(trajs) == N and all(len(t["steps"]) == 1 for t in trajs)
        steps = [t["steps"][0] for t in trajs]
        assert all(s["token_source"] == "upstream" and s["response_logprobs"] for s in steps)
        assert sorted(round(t["advantage"], 4) for t in trajs) == [-0.866, -0.866, 0.866, 0.866]
        tensors = tensorize(batch, backend="torch", pad_token_id=0)
        assert tensors["has_log_probs"].all()

        # (1) the gateway's sampled ids and logprobs are what the same weights give
        policy.eval()
        with torch.no_grad():
            before = recompute_logprobs(policy, tensors)
        mask = tensors["response_mask"].bool()
        diff = (before - tensors["old_log_probs"]).abs()[mask]
        assert float(diff.max()) < 1e-3, f"max |recomputed - captured| = {float(diff.max()):.2e}"

        # (2) one optimizer step moves the logprobs with the advantage's sign
        policy.train()
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-5)
        loss, metrics = grpo_loss(policy, tensors, clip_eps=0.2)
        assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-3) and metrics["clip_frac"] == 0.0
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        policy.eval()
        with torch.no_grad():
            after = recompute_logprobs(policy, tensors)
        pos0, neg0 = side_means(before, tensors)
        pos1, neg1 = side_means(after, tensors)
        print(f"max |diff| {float(diff.max()):.2e}; positive {pos0:.4f} -> {pos1:.4f}; "
              f"negative {neg0:.4f} -> {neg1:.4f}; {metrics}")
        assert pos1 > pos0, (pos0, pos1)
        assert neg1 < neg0, (neg0, neg1)
        api.post(f"/api/v1/batches/{batch['batch_id']}/ack").raise_for_status()
