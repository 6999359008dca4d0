"""Rollouts for PPO: sample replies with the KV cache, then score every sampled token.

A rollout batch holds left-padded prompts and right-padded responses. ``response_mask`` is 1
on each response's tokens up to and including its first end-of-turn token, and 0 after it, so
nothing a model generates past the end counts. The log-probabilities, reference log-probabilities
and values are all read at the positions whose logits *predict* each response token: position
``P - 1 + t`` for response token ``t`` (``P`` the padded prompt length). Introduced in ``04_ppo``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .core import entropy_from_logits


@dataclass
class RolloutBatch:
    """One batch of sampled replies and everything PPO reads from it.

    Attributes:
        prompts: the chat prompts (message lists), one per row.
        records: the records the prompts came from (domain, reference), for scoring.
        prompt_ids: left-padded prompt tokens, ``(batch, P)``.
        prompt_mask: 1 on real prompt tokens, ``(batch, P)``.
        response_ids: right-padded sampled tokens, ``(batch, T)``.
        response_mask: 1 up to and including the first end-of-turn token, ``(batch, T)``.
        ended: whether each response produced the end-of-turn token, ``(batch,)``.
        texts: the decoded responses, without special tokens.
    """

    prompts: list[list[dict[str, str]]]
    records: list[dict[str, Any]]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor
    texts: list[str]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (batch, P + T)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (batch, P + T)

    def select(self, rows: torch.Tensor | Sequence[int]) -> "RolloutBatch":
        """The sub-batch of ``rows`` (a minibatch), extras included.

        Columns that are padding in every selected row are dropped (the longest prompt and reply
        among them set the width), so a minibatch of short replies costs only their length.
        """
        index = torch.as_tensor(rows)
        keep = index.tolist()
        prompt_mask, response_mask = self.prompt_mask[index], self.response_mask[index]
        first = int(prompt_mask.any(dim=0).float().argmax())  # first prompt column with a real token (left padding)
        width = max(1, int(response_mask.any(dim=0).sum()))  # responses are right-padded: their longest, at least one
        return RolloutBatch(
            prompts=[self.prompts[i] for i in keep], records=[self.records[i] for i in keep],
            prompt_ids=self.prompt_ids[index, first:], prompt_mask=prompt_mask[:, first:],
            response_ids=self.response_ids[index, :width], response_mask=response_mask[:, :width],
            ended=self.ended[index], texts=[self.texts[i] for i in keep],
            extras={k: v[index, :width] for k, v in self.extras.items()},
        )


def response_mask_from(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of each response's tokens up to and including its first ``eos_id``; and whether it has one.

    Args:
        response_ids: ``(batch, T)`` sampled tokens (anything may follow the end).

    Returns:
        ``(mask, ended)``: ``(batch, T)`` float mask and ``(batch,)`` bool.
    """
    is_eos = response_ids == eos_id  # (batch, T)
    ended = is_eos.any(dim=1)
    first = torch.where(ended, is_eos.float().argmax(dim=1), torch.full_like(ended, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1], device=response_ids.device).unsqueeze(0)  # (1, T)
    return (positions <= first.unsqueeze(1)).float(), ended


@torch.no_grad()
def sample_rollouts(policy, tokenizer, records: Sequence[dict[str, Any]], *, max_new_tokens: int,
                    temperature: float = 1.0, top_p: float = 1.0) -> RolloutBatch:
    """Sample one reply per prompt from ``policy`` (batched, with the KV cache).

    Args:
        policy: the causal LM (LoRA adapter on).
        tokenizer: its tokenizer, with the chat template.
        records: records with a ``prompt`` (message list); ``domain`` and ``reference`` are kept for scoring.
        max_new_tokens: the longest reply; one that has not ended by then is cut (``ended`` False).
        temperature: sampling temperature.
        top_p: nucleus sampling threshold (1.0: off).
    """
    prompts = [r["prompt"] for r in records]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(policy.device)
    finally:
        tokenizer.padding_side = side
    was_training = policy.training
    policy.eval()
    out = policy.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                          top_k=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    policy.train(was_training)
    response_ids = out[:, enc["input_ids"].shape[1]:]  # (batch, T)
    mask, ended = response_mask_from(response_ids, tokenizer.eos_token_id)
    response_ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    decoded = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return RolloutBatch(prompts=list(prompts), records=list(records), prompt_ids=enc["input_ids"],
                        prompt_mask=enc["attention_mask"].float(), response_ids=response_ids, response_mask=mask,
                        ended=ended, texts=[t.strip() for t in decoded])


def end_of_turn_rate(policy, tokenizer, prompts: Sequence[list[dict[str, str]]], *, temperature: float,
                     max_new_tokens: int, batch_size: int = 32) -> float:
    """Share of replies sampled as the RL stages sample them that end within ``max_new_tokens``.

    RL learns from whole replies: a rollout cut at the length limit is scored on half an
    answer. The rollout settings of the RL stages are chosen where this rate is high
    (``docs/preference_feasibility.md``).
    """
    records = [{"prompt": p} for p in prompts]
    ended = sum(int(sample_rollouts(policy, tokenizer, records[start:start + batch_size], max_new_tokens=max_new_tokens,
                                    temperature=temperature).ended.sum())
                for start in range(0, len(records), batch_size))
    return ended / max(1, len(records))


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs(model, batch: RolloutBatch, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the sampled response tokens under ``model``, ``(batch, T)``.

    Logits are divided by the sampling temperature, so at the sampling step these equal the
    log-probabilities the tokens were drawn with.

    Returns:
        ``(logprobs, entropy)``; ``entropy`` (per position, ``(batch, T)``) only when asked for.
    """
    ids, mask = batch.input_ids, batch.attention_mask
    length = batch.response_ids.shape[1]
    # Only the last T + 1 positions go through the LM head: the prompt's logits would be thrown away.
    logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                   logits_to_keep=length + 1).logits  # (batch, T + 1, vocab)
    logits = logits[:, :-1].float() / temperature  # (batch, T, vocab): position P - 1 + t predicts response token t
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logprobs, entropy


def token_values(value_model, batch: RolloutBatch) -> torch.Tensor:
    """The value model's estimate at each response position, ``(batch, T)``.

    The value model is a sequence-classification model (the reward model's architecture); its
    scalar head is applied to every position's hidden state instead of only the last one.
    """
    base = value_model.get_base_model() if hasattr(value_model, "get_base_model") else value_model
    ids, mask = batch.input_ids, batch.attention_mask
    hidden = base.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).last_hidden_state
    prompt_len = batch.prompt_ids.shape[1]
    # The head reads the positions before each response token only: (batch, T, hidden) -> (batch, T).
    return base.score(hidden[:, prompt_len - 1:-1]).squeeze(-1).float()


def xray(batch: RolloutBatch, tokenizer, row: int = 0):
    """One reply of a rollout, token by token: what PPO saw and computed at each step.

    Reads ``batch.extras`` as :meth:`~course_lib.stages.ppo.PPOTrainer.rollout` fills it.

    Returns:
        A ``pandas.DataFrame`` with one row per response token (up to its end): the token, its
        log-probability under the policy and the reference, the per-token KL, the value, the
        per-token reward, the advantage and the return.
    """
    import pandas as pd

    length = int(batch.response_mask[row].sum())
    ex = batch.extras
    columns = {"token": [tokenizer.decode([t]) for t in batch.response_ids[row, :length].tolist()]}
    for name in ("logprobs", "ref_logprobs", "kl", "values", "rewards", "advantages", "returns"):
        columns[name] = ex[name][row, :length].detach().float().cpu().numpy()
    return pd.DataFrame(columns)


def kl_to_reference(policy, tokenizer, records: Sequence[dict[str, Any]], *, temperature: float, max_new_tokens: int,
                    seed: int = 0, reference=None, batch_size: int = 16) -> dict[str, float]:
    """How far a policy has moved from its reference, in nats per reply.

    Replies are sampled from the policy; each one's KL is the sum over its tokens of
    ``log pi(a_t) - log pi_ref(a_t)`` (the k1 estimate, at the sampling temperature), the
    quantity PPO penalises. DPO and PPO policies are compared on it (``05_dpo``).

    Args:
        policy: the policy; a ``peft`` model whose adapter-off state is the reference, unless ``reference`` is given.
        tokenizer: its tokenizer.
        records: records with a ``prompt``.
        temperature: sampling temperature (PPO's rollouts use 0.7).
        max_new_tokens: the longest reply.
        seed: seed of the sampling (the global random state is left as it was).
        reference: a separate reference model with the same tokenizer (the pipeline's SFT model).

    Returns:
        ``{"mean": KL per reply, "eos_rate": share of replies that ended}``.
    """
    from .core import masked_sum

    per_reply, ended = [], []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(records), batch_size):
            batch = sample_rollouts(policy, tokenizer, records[start:start + batch_size], max_new_tokens=max_new_tokens,
                                    temperature=temperature)
            logprobs = token_logprobs(policy, batch, temperature)[0]  # (batch, T)
            if reference is not None:
                ref_logprobs = token_logprobs(reference, batch, temperature)[0]
            else:
                with policy.disable_adapter():
                    ref_logprobs = token_logprobs(policy, batch, temperature)[0]
            per_reply += masked_sum(logprobs - ref_logprobs, batch.response_mask, dim=1).tolist()
            ended += batch.ended.tolist()
    return {"mean": sum(per_reply) / max(1, len(per_reply)), "eos_rate": sum(ended) / max(1, len(ended))}
