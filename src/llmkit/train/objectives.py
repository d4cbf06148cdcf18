"""The alignment objectives as plain tensor functions: Bradley-Terry, DPO (and IPO, label-smoothed
variants), GAE, PPO's clipped policy and value losses, GRPO's group-normalised advantages and its
loss normalisations, KL penalties, and distillation divergences.

Every function here is pure math on log-probabilities, values or logits that the stage modules
(``train/reward.py``, ``dpo.py``, ``ppo.py``, ``grpo.py``, ``distill.py``) compute with the model;
tests/test_objectives.py checks each against hand computations and TRL's trainers. Losses come back
per item (per pair, per sequence or per token) so the one training loop can sum them and divide by
its global count, which keeps gradient accumulation and DDP exact.

Shapes: B sequences (or pairs), T completion tokens, G samples per prompt, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSSES = ("sigmoid", "ipo", "robust")
LOSS_NORMS = ("sequence", "token", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
DIVERGENCES = ("forward", "reverse", "mix")


# ---- reward modelling --------------------------------------------------------------------------
def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected [- margin]) per pair (B,): the reward model's loss
    (InstructGPT), with Llama 2's optional margin."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


# ---- DPO ---------------------------------------------------------------------------------------
def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses (B,) and the implicit rewards ``beta * (log pi - log ref)`` of the chosen
    and rejected answers (B,) each, from summed completion log-probabilities (B,).

    ``sigmoid``: -log sigmoid(beta * margin) (Rafailov et al. 2023); with ``label_smoothing`` e > 0
    the conservative cDPO form -(1-e) log sigmoid(beta m) - e log sigmoid(-beta m), for labels that
    are wrong with probability e. ``robust``: rDPO (Chowdhury et al. 2024), an unbiased loss under
    label noise e. ``ipo``: (m / tokens - 1 / (2 beta))^2 on per-token averaged log-ratios (Azar et
    al. 2023, normalised by length as TRL does); needs the token counts.
    """
    chosen_ratio = policy_chosen - ref_chosen  # (B,)
    rejected_ratio = policy_rejected - ref_rejected  # (B,)
    margin = chosen_ratio - rejected_ratio  # (B,)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    elif loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * margin)
        flipped = -label_smoothing * F.logsigmoid(-beta * margin)
        losses = (clean - flipped) / (1 - 2 * label_smoothing)
    elif loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the chosen and rejected token counts")
        avg = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (avg - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss_type!r}; use one of {', '.join(DPO_LOSSES)}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# ---- PPO ---------------------------------------------------------------------------------------
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over completion tokens.

    rewards, values, mask (B, T); positions where ``mask`` is 0 (after the end) count as terminal.
    Returns advantages and returns (= advantages + values), both (B, T), zero where masked.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (PPO's advantage normalisation)."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * m


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token (B, T): -min(r A, clip(r, 1-e, 1+e_high) A), r = pi / pi_old.
    ``advantages`` is (B, T) or (B, 1). Also returns where the clip was active (B, T) bool."""
    ratio = torch.exp(logp - old_logp)
    high = clip if clip_high is None else clip_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + high) * advantages
    return -torch.min(unclipped, clipped), clipped < unclipped


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss per token (B, T): 0.5 max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2).
    Also returns where the clipped term was the larger (B, T) bool."""
    clipped_v = old_values + torch.clamp(values - old_values, -clip, clip)
    plain, clipped = (values - returns) ** 2, (clipped_v - returns) ** 2
    return 0.5 * torch.max(plain, clipped), clipped > plain


# ---- GRPO --------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages (B,) for rewards (B,) laid out as consecutive groups of ``group_size``
    samples of one prompt: reward minus the group mean, divided by the group's standard deviation
    (unbiased, + eps) when ``scale`` (Shao et al. 2024); Dr. GRPO drops the division (``scale=False``).

    NaN rewards (failed reward calls) are left out of their group's statistics and get advantage 0.
    """
    g = rewards.view(-1, group_size)  # (P, G)
    valid = ~torch.isnan(g)
    n = valid.sum(dim=1, keepdim=True)  # (P, 1)
    mean = torch.where(valid, g, 0.0).sum(dim=1, keepdim=True) / n.clamp(min=1)
    adv = torch.where(valid, g - mean, 0.0)  # (P, G)
    if scale:
        std = ((adv**2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        adv = adv / (std + eps)
    return adv.reshape(-1)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """The summed loss of a micro-batch under GRPO's normalisation ``norm``; the loop divides it by
    :func:`loss_count` summed over the whole optimizer step.

    ``sequence`` (GRPO paper): each sequence's token mean, averaged over sequences, so short answers
    weigh as much as long ones. ``token`` (DAPO): every token counts once across the batch.
    ``dr_grpo`` (Dr. GRPO): the token sum over a constant (sequences x max completion length), so no
    length bias enters through the normaliser.
    """
    m = mask.to(per_token.dtype)
    if norm == "sequence":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).sum()
    if norm in ("token", "dr_grpo"):
        return (per_token * m).sum()
    raise ValueError(f"unknown loss normalisation {norm!r}; use one of {', '.join(LOSS_NORMS)}")


def loss_count(mask: torch.Tensor, norm: str, max_len: int) -> float:
    """What :func:`aggregate`'s sum is divided by, for one micro-batch (summed over micro-batches)."""
    if norm == "sequence":
        return float(mask.shape[0])
    if norm == "token":
        return float(mask.sum())
    if norm == "dr_grpo":
        return float(mask.shape[0] * max_len)
    raise ValueError(f"unknown loss normalisation {norm!r}; use one of {', '.join(LOSS_NORMS)}")


# ---- KL ----------------------------------------------------------------------------------------
def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from log-probabilities of tokens sampled from pi (Schulman,
    "Approximating KL divergence"): ``k1`` = log pi - log ref (unbiased, can be negative; PPO's
    reward shaping), ``k2`` = (log pi - log ref)^2 / 2, ``k3`` = exp(log ref - log pi) - (log ref -
    log pi) - 1 (unbiased, never negative; GRPO's penalty)."""
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff**2
    if estimator == "k3":
        return torch.exp(-diff) + diff - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")


# ---- distillation ------------------------------------------------------------------------------
def distill_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    kind: str = "forward",
    mix: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence (...,) between teacher and student next-token distributions, both
    softened by ``temperature`` and scaled by temperature^2 so gradients keep their size (Hinton et
    al. 2015). ``forward`` = KL(teacher || student) (mass-covering), ``reverse`` = KL(student ||
    teacher) (mode-seeking, as in MiniLLM), ``mix`` = (1 - mix) forward + mix reverse.

    Logits (..., V); computed in fp32.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (..., V)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (..., V)
    scale = temperature**2
    if kind == "forward":
        return scale * (t.exp() * (t - s)).sum(-1)
    if kind == "reverse":
        return scale * (s.exp() * (s - t)).sum(-1)
    if kind == "mix":
        fwd = (t.exp() * (t - s)).sum(-1)
        rev = (s.exp() * (s - t)).sum(-1)
        return scale * ((1 - mix) * fwd + mix * rev)
    raise ValueError(f"unknown divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")
