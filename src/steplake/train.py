"""A small reference policy-gradient step for hand-written training loops.

This is a reference, not a trainer: verl, TRL and OpenRLHF users keep their own trainers and feed them
through :mod:`steplake.batches` (``to_verl``, ``to_hf_dataset``, ``to_trl_dpo_rows``). For a loop of
your own, this module shows how the padded tensors of :func:`steplake.batches.tensorize` map onto a
GRPO/PPO-style clipped policy-gradient loss::

    from steplake.batches import tensorize
    from steplake.train import grpo_loss

    batch = client.fetch_batch("train", groups=8, recipe="grpo")   # steplake.client; or POST /api/v1/batches
    tensors = tensorize(batch, backend="torch", pad_token_id=tok.pad_token_id or 0)
    loss, metrics = grpo_loss(model, tensors, clip_eps=0.2)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    client.ack(batch["batch_id"])

``model`` is any Hugging Face-style causal LM: ``model(input_ids=..., attention_mask=...,
position_ids=...)`` returns an object with ``.logits`` ``[B, L, V]``. torch is imported lazily (the
steplake core never needs it), so this module imports without torch installed.

Alignment: the padded tensors are ``input_ids = prompts (left-padded, width P) ++ responses (right-
padded, width R)``. The logit at position ``t`` predicts token ``t + 1``, so the logits predicting the
response tokens are those at positions ``P - 1 … P + R - 2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["grpo_loss", "recompute_logprobs"]

_FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids")


def _device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return None


def recompute_logprobs(model: Any, tensors: Mapping[str, Any], *, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability ``[B, R]`` (float32) of each ``responses`` token under ``model``.

    Uses ``input_ids``, ``attention_mask``, ``position_ids`` and ``responses`` of the padded tensors
    (``tensorize(..., mode="padded", backend="torch")``). Runs under the caller's grad mode (wrap it in
    ``torch.no_grad()`` to only evaluate). Values on padding (``response_mask == 0``) are meaningless;
    they are set to 0 so they can never be NaN. ``temperature`` divides the logits first (use the
    sampling temperature when the logprobs to compare were computed that way; steplake's embedded model
    and vLLM report raw logprobs, i.e. temperature 1).
    """
    import torch

    responses = tensors["responses"]
    if responses.dim() != 2:
        raise ValueError("recompute_logprobs needs padded tensors (tensorize(..., mode='padded'))")
    device = _device(model)
    inputs = {k: tensors[k].to(device) for k in _FORWARD_KEYS}
    responses = responses.to(device)
    width = responses.shape[1]
    if width == 0:
        return torch.zeros(responses.shape, dtype=torch.float32, device=device)
    try:  # only the last R + 1 positions are needed: saves the [B, P, V] logits of the prompt
        out = model(**inputs, logits_to_keep=width + 1)
    except TypeError:
        out = model(**inputs)
    logits = out.logits[:, -(width + 1) : -1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    logprobs: torch.Tensor = picked - torch.logsumexp(logits, dim=-1)
    mask = tensors.get("response_mask")
    if mask is None:
        return logprobs
    return torch.where(mask.to(device).bool(), logprobs, torch.zeros_like(logprobs))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)


def grpo_loss(
    model: Any, batch_tensors: Mapping[str, Any], *, clip_eps: float = 0.2, kl_coef: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO-style clipped policy-gradient loss of a GRPO (or RLOO / REINFORCE++) batch.

    Per response token: ``ratio = exp(logp - old_log_probs)``, loss
    ``max(-A * ratio, -A * clip(ratio, 1 - clip_eps, 1 + clip_eps))``, averaged over every
    ``response_mask`` token of the batch (token-mean). ``advantages`` ``[B, R]`` come from the batch
    (a ``[B]`` tensor is broadcast over each row's tokens). Rows whose ``has_log_probs`` is False have no
    sampling logprobs: their ratio is taken on-policy (``old = logp.detach()``, ratio 1).

    ``kl_coef > 0`` adds ``kl_coef * KL`` with the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
    against ``batch_tensors["ref_log_probs"]`` when present, else against ``old_log_probs``.

    Returns ``(loss, metrics)``; metrics (floats): ``loss``, ``pg_loss``, ``kl``, ``clip_frac``,
    ``ratio_mean``, ``approx_kl`` (mean ``old - logp``), ``logprob_mean``, ``n_tokens``.
    """
    import torch

    logp = recompute_logprobs(model, batch_tensors)
    device = logp.device
    mask = batch_tensors["response_mask"].to(device).bool()
    old = batch_tensors["old_log_probs"].to(device=device, dtype=torch.float32)
    has_lp = batch_tensors.get("has_log_probs")
    if has_lp is not None:
        old = torch.where(has_lp.to(device).bool()[:, None], old, logp.detach())
    adv = batch_tensors["advantages"].to(device=device, dtype=torch.float32)
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(logp)
    log_ratio = torch.where(mask, logp - old, torch.zeros_like(logp))
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg_tok = torch.maximum(-adv * ratio, -adv * clipped)
    pg_loss = _masked_mean(pg_tok, mask)
    kl = torch.zeros((), device=device)
    if kl_coef:
        ref = batch_tensors.get("ref_log_probs", batch_tensors["old_log_probs"]).to(device=device, dtype=torch.float32)
        d = torch.where(mask, ref - logp, torch.zeros_like(logp))
        kl = _masked_mean(torch.exp(d) - d - 1.0, mask)
    loss = pg_loss + kl_coef * kl
    with torch.no_grad():
        metrics = {
            "loss": float(loss.detach()),
            "pg_loss": float(pg_loss.detach()),
            "kl": float(kl.detach()),
            "clip_frac": float(_masked_mean(((ratio - clipped).abs() > 0).float(), mask)),
            "ratio_mean": float(_masked_mean(ratio, mask)),
            "approx_kl": float(_masked_mean(-log_ratio, mask)),
            "logprob_mean": float(_masked_mean(logp, mask)),
            "n_tokens": float(mask.sum()),
        }
    return loss, metrics
