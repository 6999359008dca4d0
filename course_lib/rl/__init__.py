"""PPO's parts, used by ``course_lib.stages.ppo``: the tensor arithmetic and the rollouts.

Introduced in ``04_ppo``.
"""
from .core import (
    AdaptiveKLController, FixedKLController, PolicyLossOutput, clipped_policy_loss, clipped_value_loss, entropy_from_logits,
    explained_variance, gae, kl_per_token, masked_mean, masked_sum, masked_var, token_rewards, whiten,
)
from .rollout import (
    RolloutBatch, end_of_turn_rate, kl_to_reference, response_mask_from, sample_rollouts, token_logprobs, token_values,
    xray,
)

__all__ = [
    "AdaptiveKLController", "FixedKLController", "PolicyLossOutput", "RolloutBatch", "clipped_policy_loss",
    "clipped_value_loss", "end_of_turn_rate", "entropy_from_logits", "explained_variance", "gae", "kl_per_token",
    "kl_to_reference", "masked_mean", "masked_sum", "masked_var", "response_mask_from", "sample_rollouts", "token_logprobs",
    "token_rewards", "token_values", "whiten", "xray",
]
