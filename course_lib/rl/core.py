"""PPO's arithmetic on token tensors: masks, KL estimators, GAE, whitening, the clipped losses.

Every function takes ``(batch, response_len)`` tensors and a ``mask`` of the same shape that is
1 on the response's real tokens (up to and including its end-of-turn token) and 0 on padding
and on anything generated after the end. Nothing here knows about models; ``tests/test_rl_core.py``
checks each function against a direct computation. Introduced in ``04_ppo``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``)."""
    if dim is None:
        return masked_sum(values, mask) / mask.sum().clamp(min=1)
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``values`` where ``mask`` is 1."""
    mean = masked_mean(values, mask)
    count = mask.sum()
    return masked_sum((values - mean) ** 2, mask) / (count - 1).clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``values`` to unit variance (and zero mean) over the masked tokens; zero elsewhere.

    Whitened advantages keep the policy step's size independent of the reward's scale.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """A per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    Args:
        logprobs: ``log pi(a_t | s_t)`` of the sampled tokens under the policy, ``(batch, T)``.
        ref_logprobs: the same tokens under the reference (the SFT model), ``(batch, T)``.
        estimator: ``"k1"``: ``log pi - log ref``, unbiased, can be negative per token;
            ``"k3"``: ``r - 1 - log r`` with ``r = ref / pi``, unbiased and never negative
            (Schulman's "Approximating KL divergence").
    """
    log_ratio = logprobs - ref_logprobs  # (batch, T)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * KL`` on every token, plus the sequence's score on its last token.

    Args:
        score: one scalar reward per sequence (reward model, verifiable reward, penalties), ``(batch,)``.
        kl: per-token KL estimates, ``(batch, T)``.
        mask: response mask, ``(batch, T)``.
        kl_coef: the KL penalty's weight (beta).

    Returns:
        ``(batch, T)``, zero on masked-out positions.
    """
    rewards = -kl_coef * kl * mask  # (batch, T)
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()  # index of each response's last real token
    rewards[torch.arange(len(score)), last] += score
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response, right to left.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``,
    where ``V`` past the last real token is 0 (the episode ended there).

    Args:
        rewards: per-token rewards, ``(batch, T)``.
        values: the value model's estimates at each token, ``(batch, T)``.
        mask: response mask, ``(batch, T)``.
        gamma: discount per token.
        lam: GAE's bias-variance knob (0: one-step TD, 1: Monte-Carlo returns).

    Returns:
        ``(advantages, returns)``, each ``(batch, T)``, zero where masked; ``returns = advantages + values``.
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    running = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        running = running * mask[:, t]  # padding after the end carries nothing back
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


@dataclass
class PolicyLossOutput:
    """The clipped policy loss and the diagnostics people debug PPO with."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float = 0.2) -> PolicyLossOutput:
    """PPO's clipped surrogate: ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``, token-averaged.

    Args:
        logprobs: the tokens' log-probabilities under the policy being updated, ``(batch, T)``.
        old_logprobs: the same under the policy that sampled them, ``(batch, T)``.
        advantages: per-token advantages, ``(batch, T)``.
        mask: response mask.
        clip_range: epsilon.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)
        ratio_max = (ratio * mask).max()
    return PolicyLossOutput(loss, clip_fraction, approx_kl, masked_mean(ratio.detach(), mask), ratio_max)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The value loss with PPO's clipping: ``0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)``.

    Returns:
        ``(loss, clip_fraction)``.
    """
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clip_fraction


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over the masked tokens: 1 is a perfect value model."""
    var_returns = masked_var(returns, mask)
    return float(1 - masked_var(returns - values, mask) / var_returns) if var_returns > 0 else float("nan")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution: ``(..., vocab) -> (...)``."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, observed_kl: float, n_steps: int) -> None:
        """Nothing changes: the coefficient is fixed."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Ziegler et al.'s adaptive KL coefficient: raise it when KL runs above target, lower it below.

    ``beta <- beta * (1 + clip((KL / target) - 1, -0.2, 0.2) * n_steps / horizon)``.

    Args:
        kl_coef: the starting coefficient.
        target: the KL per sequence the controller steers towards.
        horizon: how many samples a full correction takes.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target, self.horizon = target, horizon

    def update(self, observed_kl: float, n_steps: int) -> None:
        error = min(max(observed_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
