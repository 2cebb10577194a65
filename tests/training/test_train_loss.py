"""steplake.train on a tiny random Llama (fast): alignment of recomputed logprobs with padding, and the
clipped policy-gradient loss's values and gradient direction."""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from steplake.batches import tensorize  # noqa: E402
from steplake.train import grpo_loss, recompute_logprobs  # noqa: E402

VOCAB = 64


@pytest.fixture(scope="module")
def tiny() -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).float().eval()


def reference_logprobs(model: Any, prompt: list[int], response: list[int]) -> list[float]:
    """One unpadded sequence, full-vocabulary log_softmax: the obvious way."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
    dist = torch.log_softmax(logits[len(prompt) - 1 : -1].double(), dim=-1)
    return [float(dist[i, t]) for i, t in enumerate(response)]


def make_groups(rows: list[tuple[list[int], list[int], float]], logprobs: list[list[float]] | None = None) -> list[Any]:
    trajs = []
    for i, (p, r, adv) in enumerate(rows):
        lp = logprobs[i] if logprobs is not None else None
        trajs.append({"trajectory_id": f"t{i}", "reward": adv, "advantage": adv,
                      "steps": [{"step_id": f"s{i}", "step_index": 0, "prompt_ids": p, "response_ids": r,
                                 "response_logprobs": lp}]})
    return [{"group_id": "g", "trajectories": trajs}]


ROWS = [([1, 2, 3, 4, 5], [6, 7, 8], 1.0), ([9, 10], [11, 12, 13, 14, 15, 16], -1.0), ([17, 18, 19], [20], 0.5)]


def test_recompute_matches_unpadded_forward(tiny: Any) -> None:
    t = tensorize(make_groups(ROWS), backend="torch", pad_token_id=0)
    with torch.no_grad():
        lp = recompute_logprobs(tiny, t)
    assert lp.shape == t["responses"].shape and lp.dtype == torch.float32
    for i, (p, r, _) in enumerate(ROWS):
        ref = reference_logprobs(tiny, p, r)
        assert lp[i, : len(r)].tolist() == pytest.approx(ref, abs=1e-4)
        assert (lp[i, len(r) :] == 0).all()


def test_on_policy_loss_is_minus_mean_advantage(tiny: Any) -> None:
    exact = [reference_logprobs(tiny, p, r) for p, r, _ in ROWS]
    t = tensorize(make_groups(ROWS, exact), backend="torch")
    loss, m = grpo_loss(tiny, t)
    n = sum(len(r) for _, r, _ in ROWS)
    expected = -sum(a * len(r) for _, r, a in ROWS) / n
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-4)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and m["clip_frac"] == 0.0
    assert m["n_tokens"] == n and abs(m["approx_kl"]) < 1e-4
    assert m["logprob_mean"] == pytest.approx(sum(map(sum, exact)) / n, abs=1e-4)


def test_clipping_and_missing_logprobs(tiny: Any) -> None:
    exact = [reference_logprobs(tiny, p, r) for p, r, _ in ROWS]
    shifted = [[x - 1.0 for x in lp] for lp in exact]  # ratio e > 1 + eps everywhere: all clipped
    t = tensorize(make_groups(ROWS, shifted), backend="torch")
    loss, m = grpo_loss(tiny, t, clip_eps=0.2)
    assert m["clip_frac"] == 1.0 and m["ratio_mean"] == pytest.approx(math.e, rel=1e-3)
    # positive A: min(ratio, 1.2) -> -1.2 A; negative A: max(-A r, -A 1.2) -> -A e
    n = sum(len(r) for _, r, _ in ROWS)
    expected = sum(len(r) * (-a * 1.2 if a > 0 else -a * math.e) for _, r, a in ROWS) / n
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-3)
    # no logprobs at all: on-policy ratio 1
    t = tensorize(make_groups(ROWS), backend="torch")
    _, m = grpo_loss(tiny, t)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["clip_frac"] == 0.0


def test_kl_term_is_zero_on_policy_and_positive_off(tiny: Any) -> None:
    exact = [reference_logprobs(tiny, p, r) for p, r, _ in ROWS]
    t = tensorize(make_groups(ROWS, exact), backend="torch")
    loss0, _ = grpo_loss(tiny, t)
    loss1, m = grpo_loss(tiny, t, kl_coef=0.5)
    assert m["kl"] == pytest.approx(0.0, abs=1e-5) and float(loss1.detach()) == pytest.approx(float(loss0.detach()), abs=1e-5)
    t["ref_log_probs"] = t["old_log_probs"] - 0.3 * t["response_mask"]
    _, m = grpo_loss(tiny, t, kl_coef=0.5)
    assert m["kl"] == pytest.approx(math.exp(-0.3) + 0.3 - 1, rel=1e-3)


def test_one_step_moves_logprobs_with_the_advantage_sign(tiny: Any) -> None:
    import copy

    model = copy.deepcopy(tiny).train()
    exact = [reference_logprobs(model, p, r) for p, r, _ in ROWS]
    t = tensorize(make_groups(ROWS, exact), backend="torch")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, _ = grpo_loss(model, t)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = recompute_logprobs(model.eval(), t)
    for i, (_, r, a) in enumerate(ROWS[:2]):
        delta = float(after[i, : len(r)].mean()) - sum(exact[i]) / len(r)
        assert delta * a > 0, (i, delta, a)
