"""PPO's arithmetic against direct, loop-by-loop reference computations on random tensors."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.rl import (
    AdaptiveKLController, clipped_policy_loss, clipped_value_loss, explained_variance, gae, kl_per_token,
    masked_mean, response_mask_from, token_rewards, whiten,
)

pytestmark = pytest.mark.unit
B, T = 5, 9


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([9, 4, 1, 7, 6])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).float()  # (B, T), right padding
    return {
        "mask": mask, "lengths": lengths,
        "rewards": torch.randn(B, T, generator=g), "values": torch.randn(B, T, generator=g),
        "logprobs": -torch.rand(B, T, generator=g) * 3, "old": -torch.rand(B, T, generator=g) * 3,
        "ref": -torch.rand(B, T, generator=g) * 3, "adv": torch.randn(B, T, generator=g),
        "returns": torch.randn(B, T, generator=g), "old_values": torch.randn(B, T, generator=g),
    }


def test_gae_equals_the_discounted_sum_of_td_errors(tensors):
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(tensors["rewards"], tensors["values"], tensors["mask"], gamma, lam)
    for b in range(B):
        n = int(tensors["lengths"][b])
        r, v = tensors["rewards"][b, :n].tolist(), tensors["values"][b, :n].tolist() + [0.0]
        deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            expected = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
            assert advantages[b, t].item() == pytest.approx(expected, abs=1e-5)
            assert returns[b, t].item() == pytest.approx(expected + v[t], abs=1e-5)
        assert torch.all(advantages[b, n:] == 0) and torch.all(returns[b, n:] == 0)


def test_gae_with_lambda_one_and_no_discount_gives_monte_carlo_returns(tensors):
    _, returns = gae(tensors["rewards"], tensors["values"], tensors["mask"], 1.0, 1.0)
    for b in range(B):
        n = int(tensors["lengths"][b])
        for t in range(n):
            assert returns[b, t].item() == pytest.approx(tensors["rewards"][b, t:n].sum().item(), abs=1e-5)


def test_whitening_gives_zero_mean_unit_variance_over_the_mask(tensors):
    mask = tensors["mask"]
    out = whiten(tensors["adv"] * 3 + 2, mask)
    kept = out[mask.bool()]
    assert kept.mean().item() == pytest.approx(0, abs=1e-5)
    assert kept.std(unbiased=True).item() == pytest.approx(1, abs=1e-4)
    assert torch.all(out[~mask.bool()] == 0)
    kept_mean = whiten(tensors["adv"] * 3 + 2, mask, shift_mean=False)[mask.bool()].mean()
    assert kept_mean.item() == pytest.approx((tensors["adv"] * 3 + 2)[mask.bool()].mean().item(), abs=1e-4)


def test_kl_estimators_match_their_formulas(tensors):
    logp, ref = tensors["logprobs"], tensors["ref"]
    k1, k3 = kl_per_token(logp, ref, "k1"), kl_per_token(logp, ref, "k3")
    for b in range(B):
        for t in range(T):
            lp, lr = logp[b, t].item(), ref[b, t].item()
            assert k1[b, t].item() == pytest.approx(lp - lr, abs=1e-6)
            r = math.exp(lr - lp)
            assert k3[b, t].item() == pytest.approx(r - 1 - math.log(r), abs=1e-5)
    assert torch.all(k3 >= 0)
    with pytest.raises(ValueError, match="k1.*k3"):
        kl_per_token(logp, ref, "k2")


def test_both_kl_estimators_are_unbiased_for_the_true_kl():
    """Sampled from the policy, the mean of k1 and of k3 both approach KL(pi || ref)."""
    g = torch.Generator().manual_seed(1)
    pi, ref = torch.softmax(torch.randn(6, generator=g), 0), torch.softmax(torch.randn(6, generator=g), 0)
    true_kl = float((pi * (pi / ref).log()).sum())
    samples = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    logp, logr = pi.log()[samples], ref.log()[samples]
    for estimator in ("k1", "k3"):
        assert kl_per_token(logp, logr, estimator).mean().item() == pytest.approx(true_kl, abs=0.01)


def test_clipped_policy_loss_matches_an_elementwise_reference(tensors):
    mask, eps = tensors["mask"], 0.2
    out = clipped_policy_loss(tensors["logprobs"], tensors["old"], tensors["adv"], mask, eps)
    total = count = clipped = 0.0
    for b in range(B):
        for t in range(int(tensors["lengths"][b])):
            ratio = math.exp(tensors["logprobs"][b, t].item() - tensors["old"][b, t].item())
            a = tensors["adv"][b, t].item()
            plain, clip = -a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps)
            total += max(plain, clip)
            clipped += clip > plain
            count += 1
    assert out.loss.item() == pytest.approx(total / count, abs=1e-5)
    assert out.clip_fraction.item() == pytest.approx(clipped / count, abs=1e-6)
    assert out.ratio_max.item() >= out.ratio_mean.item() > 0 and out.approx_kl.item() >= 0


def test_policy_loss_at_the_sampling_policy_is_minus_the_mean_advantage(tensors):
    out = clipped_policy_loss(tensors["old"], tensors["old"], tensors["adv"], tensors["mask"])
    assert out.loss.item() == pytest.approx(-masked_mean(tensors["adv"], tensors["mask"]).item(), abs=1e-6)
    assert out.clip_fraction.item() == 0 and out.approx_kl.item() == 0


def test_clipped_value_loss_matches_an_elementwise_reference(tensors):
    mask, eps = tensors["mask"], 0.2
    loss, frac = clipped_value_loss(tensors["values"], tensors["old_values"], tensors["returns"], mask, eps)
    total = count = clipped = 0.0
    for b in range(B):
        for t in range(int(tensors["lengths"][b])):
            v, old, ret = (tensors[k][b, t].item() for k in ("values", "old_values", "returns"))
            vc = old + min(max(v - old, -eps), eps)
            total += 0.5 * max((v - ret) ** 2, (vc - ret) ** 2)
            clipped += (vc - ret) ** 2 > (v - ret) ** 2
            count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)
    assert frac.item() == pytest.approx(clipped / count, abs=1e-6)


def test_padding_and_tokens_after_the_end_are_masked_out():
    eos = 7
    ids = torch.tensor([[3, 4, 7, 5, 5],   # ends at 2; 5, 5 were generated after the end
                        [3, 7, 0, 0, 0],   # ends at 1, then padding (0)
                        [3, 4, 5, 6, 2]])  # never ends
    mask, ended = response_mask_from(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert ended.tolist() == [True, True, False]
    # Whatever sits under the mask's zeros changes nothing downstream.
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    noisy_r, noisy_v = rewards + (1 - mask) * 100, values + (1 - mask) * 100
    assert torch.allclose(gae(rewards, values, mask)[0], gae(noisy_r, noisy_v, mask)[0])
    logp, old, adv = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    base = clipped_policy_loss(logp, old, adv, mask).loss
    assert torch.allclose(base, clipped_policy_loss(logp + (1 - mask) * 5, old, adv + (1 - mask) * 50, mask).loss)


def test_token_rewards_put_the_score_on_the_last_real_token(tensors):
    mask = tensors["mask"]
    kl = torch.ones(B, T)
    score = torch.arange(B, dtype=torch.float32)
    rewards = token_rewards(score, kl, mask, kl_coef=0.1)
    for b in range(B):
        n = int(tensors["lengths"][b])
        expected = [-0.1] * n
        expected[n - 1] += score[b].item()
        assert rewards[b, :n].tolist() == pytest.approx(expected, abs=1e-6)
        assert torch.all(rewards[b, n:] == 0)


def test_explained_variance_is_one_for_a_perfect_value_model(tensors):
    assert explained_variance(tensors["returns"], tensors["returns"], tensors["mask"]) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(B, T), tensors["returns"], tensors["mask"]) < 0.1


def test_adaptive_kl_controller_moves_towards_its_target():
    controller = AdaptiveKLController(0.1, target=2.0, horizon=100)
    controller.update(observed_kl=10.0, n_steps=10)  # far above target: raise beta (capped at +20% x steps/horizon)
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller.update(observed_kl=0.0, n_steps=10)
    assert controller.value < 0.1 * (1 + 0.2 * 10 / 100)
