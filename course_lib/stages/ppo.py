"""The PPO stage: the kit's own PPO for causal LMs, on transformers and peft.

TRL removed its ``PPOTrainer`` (huggingface/trl PR #7020), so the kit owns a small, readable
one. Each iteration samples replies from the policy (KV cache, temperature, top-p), scores
them with the reward model (plus an optional verifiable reward for code, minus a penalty for
replies that never end), turns the score and a per-token KL penalty to the SFT model into
per-token rewards, estimates advantages with GAE against a value model, and takes a few
epochs of clipped policy and value updates.

The models, with one copy of the SFT weights for policy and reference:

- policy: the merged SFT model with a fresh LoRA adapter; the **reference is the same model
  with the adapter switched off**, which is exactly the SFT model (DESIGN.md, "The reference model");
- value model: the reward model (SFT body, reward head and its LoRA, or all its weights where the
  profile trains reward models whole) trained further, saved at the end;
- reward model: notebook 03's, frozen.

Notebook 04 builds the trainer with :func:`make_ppo_trainer`, calls ``trainer.train()`` and
hands it to :func:`finish_ppo`; :func:`run_ppo` does the same with a cache and resumes from the
last checkpoint. The stage folder ``runs/<name>/ppo/`` holds ``adapter/``, ``merged/`` (the PPO
policy), ``value_model/``, ``checkpoints/``, and the usual config, metrics and marker.
Introduced in ``04_ppo``.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import load_records
from ..generation import judge_replies
from ..models import add_lora, detect_device, load_model, load_tokenizer
from ..rl.core import (
    AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss, explained_variance, gae,
    kl_per_token, masked_mean, token_rewards, whiten,
)
from ..rl.rollout import RolloutBatch, sample_rollouts, token_logprobs, token_values
from .base import (
    ComputeLedger, RunContext, StageResult, completed, finish_stage, load_stage_metrics, reopen_stage,
    stage_hash,
)
from .policy import before_and_after, gold_prompts, save_policy
from .ppo_config import PPOStageConfig
from .reward import PRODUCER as REWARD_PRODUCER
from .reward import STAGE as REWARD_STAGE
from .reward import SFT_PRODUCER, ensemble_scores, load_reward_model, save_score_model, score_model_learning_rate

STAGE = "ppo"
CHECKPOINT_STATE = "trainer_state.pt"


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean of the values that are not NaN (gold scores of prompts with a reference), None if there are none."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else None


class PPOTrainer:
    """PPO on a LoRA policy, a value model and a frozen reward model.

    Use :func:`make_ppo_trainer` to build one from a run. ``trainer.train()`` runs
    ``max_steps`` iterations; each is :meth:`rollout` then :meth:`update`, and both can be
    called by hand (notebook 04 x-rays one rollout that way).

    Args:
        cfg: the stage config.
        profile: the run's profile (lengths, device).
        policy: the causal LM with a trainable LoRA adapter over the SFT weights.
        value_model: the trainable value model.
        reward_model: the frozen reward model, or a list of ensemble members (their mean score,
            less ``uncertainty_penalty`` times their spread); or None with ``reward_fn``.
        tokenizer: the shared tokenizer.
        prompts: records (``prompt``, ``domain``, ``reference``) to sample prompts from.
        output_dir: where checkpoints go.
        callbacks: functions called with each iteration's stats dict.
        reward_fn: instead of a reward model, ``reward_fn(records, texts) -> array of scores``
            (a proxy for a lab, a toy task in the tests).
    """

    def __init__(self, cfg: PPOStageConfig, profile, policy, value_model, reward_model, tokenizer,
                 prompts: list[dict[str, Any]], output_dir: Path, callbacks: list[Callable[[dict], None]] | None = None,
                 reward_fn: Callable[[list[dict], list[str]], Any] | None = None):
        import torch
        from peft import PeftModel
        from trl.trainer.utils import disable_dropout_in_model

        if (reward_model is None) == (reward_fn is None):
            raise ValueError("give PPOTrainer a reward_model or a reward_fn, exactly one")
        self.cfg, self.profile, self.reward_fn = cfg, profile, reward_fn
        self.policy, self.value_model, self.tokenizer = policy, value_model, tokenizer
        # As TRL's trainers do: with dropout (a profile's LoRA dropout), the same weights would give the rollout
        # and the update different log-probs and values, and the ratio and value clipping would measure noise.
        for model in (policy, value_model):
            disable_dropout_in_model(model)
        # One model or an ensemble: held as a list of members either way (empty with reward_fn).
        if isinstance(reward_model, (list, tuple)):
            self.reward_models = list(reward_model)
        else:
            self.reward_models = [] if reward_model is None else [reward_model]
        self.prompts, self.output_dir, self.callbacks = prompts, Path(output_dir), list(callbacks or [])
        self.max_steps = cfg.max_steps or profile.budgets.ppo
        self.kl_controller = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
                              else FixedKLController(cfg.kl_coef))
        # A twentieth of the profile's: at a tenth, PPO fixed the replies' form as fast but lost their content on
        # two seeds of three (docs/preference_feasibility.md, "Near misses").
        policy_lr = cfg.learning_rate or profile.training.learning_rate / 20
        value_lr = cfg.value_learning_rate or score_model_learning_rate(profile, isinstance(value_model, PeftModel))
        self.optimizer = torch.optim.AdamW([
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": policy_lr},
            {"params": [p for p in value_model.parameters() if p.requires_grad], "lr": value_lr},
        ])
        self.ledger = ComputeLedger(device=detect_device(profile.device))
        self.step = 0
        self.resumed_from_step: int | None = None
        self.history: list[dict[str, float]] = []
        self.samples: list[dict[str, Any]] = []
        self._rng = random.Random(cfg.seed)
        self._order: list[int] = []

    # --- one iteration ---------------------------------------------------------------------

    def next_prompts(self) -> list[dict[str, Any]]:
        """The next ``batch_size`` prompt records, in a reshuffled order each pass."""
        batch = []
        while len(batch) < self.cfg.batch_size:
            if not self._order:
                self._order = list(range(len(self.prompts)))
                self._rng.shuffle(self._order)
            batch.append(self.prompts[self._order.pop()])
        return batch

    def reference_logprobs(self, batch: RolloutBatch):
        """The sampled tokens' log-probabilities under the SFT model: the policy with its adapter off."""
        import torch

        with torch.no_grad(), self.policy.disable_adapter():
            return token_logprobs(self.policy, batch, self.cfg.temperature)[0]

    def scores(self, batch: RolloutBatch) -> dict[str, Any]:
        """Each reply's scalar reward, and its parts: reward model, verifiable reward, missing-EOS penalty, gold.

        ``gold`` is NaN for a prompt without a reference (a user's own: no gold judge, no tests);
        ``tests_passed`` is the mean share of unit tests the batch's code replies pass (None without
        code prompts that carry tests); ``gold_seconds`` the time the gold judge took (code runs in the sandbox).
        """
        import torch

        if self.reward_fn is not None:
            rm = np.asarray(self.reward_fn(batch.records, batch.texts), dtype=np.float32)
        else:
            conversations = [p + [{"role": "assistant", "content": t}] for p, t in zip(batch.prompts, batch.texts)]
            each = ensemble_scores(self.reward_models, self.tokenizer, conversations,
                                   self.profile.model.max_seq_length)  # (members, batch)
            rm = each.mean(axis=0) - self.cfg.uncertainty_penalty * each.std(axis=0)
        started = time.time()
        judged = judge_replies(batch.records, batch.texts)
        gold_seconds = time.time() - started
        is_code = np.array([r["domain"] == "code" and j is not None for r, j in zip(batch.records, judged)])
        verifiable = np.array([j.parts.get("tests_passed", 0.0) if code else 0.0 for j, code in zip(judged, is_code)])
        penalty = self.cfg.missing_eos_penalty * (~batch.ended).float().cpu().numpy()
        total = rm + self.cfg.verifiable_reward_weight * verifiable - penalty
        return {"score": torch.tensor(total, dtype=torch.float32, device=batch.response_ids.device),
                "reward_model": rm, "gold": np.array([np.nan if j is None else j.score for j in judged]),
                "tests_passed": float(verifiable[is_code].mean()) if is_code.any() else None,
                "gold_seconds": gold_seconds}

    def rollout(self, records: list[dict[str, Any]] | None = None) -> tuple[RolloutBatch, dict[str, Any]]:
        """Sample replies and compute everything the update needs, stored in ``batch.extras``.

        ``extras`` holds, per token ``(batch, T)``: ``logprobs`` (the sampling policy's),
        ``ref_logprobs``, ``kl``, ``values``, ``rewards``, ``advantages`` and ``returns``.
        """
        import torch

        started = time.time()
        batch = sample_rollouts(self.policy, self.tokenizer, records or self.next_prompts(),
                                max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        generation_seconds = time.time() - started
        mask = batch.response_mask
        with torch.no_grad():
            logprobs, entropy = token_logprobs(self.policy, batch, self.cfg.temperature, with_entropy=True)
            ref_logprobs = self.reference_logprobs(batch)
            values = token_values(self.value_model, batch) * mask
        scored = self.scores(batch)
        kl = kl_per_token(logprobs, ref_logprobs, self.cfg.kl_estimator) * mask  # (batch, T)
        rewards = token_rewards(scored["score"], kl, mask, self.kl_controller.value)
        advantages, returns = gae(rewards, values, mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        batch.extras = {"logprobs": logprobs, "ref_logprobs": ref_logprobs, "kl": kl, "values": values,
                        "rewards": rewards, "advantages": advantages, "returns": returns, "entropy": entropy * mask}
        lengths = mask.sum(dim=1)
        stats = {
            "reward": float(scored["reward_model"].mean()), "score": float(scored["score"].mean()),
            "gold": _mean_or_none(scored["gold"]), "tests_passed": scored["tests_passed"],
            "kl": float(kl.sum(dim=1).mean()), "kl_coef": self.kl_controller.value,
            "entropy": float(masked_mean(entropy, mask)), "response_length": float(lengths.mean()),
            "eos_rate": float(batch.ended.float().mean()),
            "explained_variance": explained_variance(values, returns, mask),
            "generation_seconds": generation_seconds, "gold_seconds": scored["gold_seconds"],
        }
        return batch, {**stats, "_gold": scored["gold"], "_reward": scored["reward_model"]}

    def reference_samples(self, records: list[dict[str, Any]], n: int, progress: bool = True) -> dict[str, Any]:
        """``n`` replies to each record from the SFT model (the policy's adapter off), sampled as the rollouts are and
        scored: what best-of-n picks from (notebook 04's over-optimization lab, :func:`course_lib.stats.best_of_n`).

        Returns:
            ``texts``, the ``n`` replies of each record; ``reward_model`` and ``gold``, their scores, ``(records, n)``.
        """
        import torch
        from tqdm.auto import tqdm

        texts, rewards, golds = [], [], []
        with torch.no_grad(), self.policy.disable_adapter():
            for record in tqdm(records, desc=f"{n} replies per prompt", disable=not progress):
                batch = sample_rollouts(self.policy, self.tokenizer, [record] * n, max_new_tokens=self.cfg.max_new_tokens,
                                        temperature=self.cfg.temperature, top_p=self.cfg.top_p)
                scored = self.scores(batch)
                texts.append(list(batch.texts))
                rewards.append(scored["reward_model"])
                golds.append(scored["gold"])
        return {"texts": texts, "reward_model": np.array(rewards), "gold": np.array(golds)}

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped policy and value updates over shuffled minibatches."""
        import torch

        totals: dict[str, list[float]] = {}
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.policy.train()
        self.value_model.train()
        bonus = self.cfg.entropy_coef > 0  # the rollout logs the entropy; only a bonus needs it here
        for _ in range(self.cfg.ppo_epochs):
            order = torch.randperm(len(batch.texts), generator=torch.Generator().manual_seed(self._rng.randrange(2**31)))
            for start in range(0, len(order), self.cfg.minibatch_size):
                mini = batch.select(order[start:start + self.cfg.minibatch_size])
                ex, mask = mini.extras, mini.response_mask
                logprobs, entropy = token_logprobs(self.policy, mini, self.cfg.temperature, with_entropy=bonus)
                policy = clipped_policy_loss(logprobs, ex["logprobs"], ex["advantages"], mask, self.cfg.clip_range)
                values = token_values(self.value_model, mini)
                value_loss, value_clip = clipped_value_loss(values, ex["values"], ex["returns"], mask,
                                                            self.cfg.value_clip_range)
                loss = policy.loss + self.cfg.value_coef * value_loss
                if bonus:
                    loss = loss - self.cfg.entropy_coef * masked_mean(entropy, mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, self.cfg.max_grad_norm)
                self.optimizer.step()
                for name, value in (("policy_loss", policy.loss), ("value_loss", value_loss),
                                    ("clip_fraction", policy.clip_fraction), ("approx_kl", policy.approx_kl),
                                    ("ratio_mean", policy.ratio_mean), ("ratio_max", policy.ratio_max),
                                    ("value_clip_fraction", value_clip)):
                    totals.setdefault(name, []).append(float(value.detach()))
        out = {name: float(np.mean(v)) for name, v in totals.items()}
        out["ratio_max"] = float(np.max(totals["ratio_max"]))
        return out

    def train_step(self) -> dict[str, float]:
        """One iteration: rollout, update, KL controller, bookkeeping. Returns its stats."""
        started = time.time()
        batch, stats = self.rollout()
        gold, reward = stats.pop("_gold"), stats.pop("_reward")
        stats.update(self.update(batch))
        self.kl_controller.update(stats["kl"], self.cfg.batch_size)
        self.step += 1
        seconds = time.time() - started
        stats.update(step=self.step, seconds=seconds,
                     elapsed_s=(self.history[-1]["elapsed_s"] if self.history else 0.0) + seconds)
        self.ledger.add_tokens(int(batch.attention_mask.sum()) * (1 + self.cfg.ppo_epochs))
        self.history.append(stats)
        if self.step % self.cfg.sample_every == 0 or self.step == 1:
            self.samples += [{"step": self.step, "prompt": p[-1]["content"][:200], "response": t[:300],
                              "reward": float(r), "gold": None if np.isnan(g) else float(g)}
                             for p, t, r, g in list(zip(batch.prompts, batch.texts, reward, gold))[:3]]
        for callback in self.callbacks:
            callback(stats)
        return stats

    def train(self, resume_from: Path | None = None) -> list[dict[str, float]]:
        """Run the remaining iterations up to ``max_steps``, with a live bar of reward and KL.

        Args:
            resume_from: a checkpoint folder to continue from (``run_ppo`` finds the last one).

        Returns:
            The per-iteration stats.
        """
        from tqdm.auto import tqdm

        if resume_from is not None:
            self.load_checkpoint(resume_from)
            self.resumed_from_step = self.step
        self.ledger.count(self.policy)
        bar = tqdm(total=self.max_steps, initial=self.step, desc="PPO", disable=not self.cfg.progress)
        with self.ledger:
            while self.step < self.max_steps:
                stats = self.train_step()
                bar.update()
                shown = {name: f"{stats[name]:.2f}" for name in ("reward", "kl", "gold") if stats[name] is not None}
                bar.set_postfix(**shown)
                if self.step % self.cfg.save_steps == 0 and self.step < self.max_steps:
                    self.save_checkpoint()
        bar.close()
        return self.history

    # --- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Adapters, optimizer, KL controller, prompt order, RNG and history, at ``checkpoints/checkpoint-<n>``.

        Named as transformers names its checkpoints, so :func:`~course_lib.stages.base.last_checkpoint`
        finds the newest one for every stage.
        """
        import torch

        from ..atomic import atomic_path

        target = self.output_dir / f"checkpoint-{self.step}"
        with atomic_path(target) as tmp:
            self.policy.save_pretrained(tmp / "policy", safe_serialization=True)
            self.value_model.save_pretrained(tmp / "value_model", safe_serialization=True)
            torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                        "kl_controller": self.kl_controller.state_dict(), "order": list(self._order),
                        "rng": list(self._rng.getstate()[1]), "rng_version": self._rng.getstate()[0],
                        "torch_rng": torch.get_rng_state()}, tmp / CHECKPOINT_STATE)
            (tmp / "history.json").write_text(json.dumps({"history": self.history, "samples": self.samples}))
        return target

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote."""
        import torch
        from peft import PeftModel, set_peft_model_state_dict
        from peft.utils import load_peft_weights
        from safetensors.torch import load_file

        folder = Path(folder)
        set_peft_model_state_dict(self.policy, load_peft_weights(str(folder / "policy")))
        if isinstance(self.value_model, PeftModel):
            set_peft_model_state_dict(self.value_model, load_peft_weights(str(folder / "value_model")))
        else:  # a reward model that trained all its weights (lora.reward: false)
            self.value_model.load_state_dict(load_file(str(folder / "value_model" / "model.safetensors")))
        state = torch.load(folder / CHECKPOINT_STATE, weights_only=True)
        self.step = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self._order = list(state["order"])
        self._rng.setstate((state["rng_version"], tuple(state["rng"]), None))
        torch.set_rng_state(state["torch_rng"])
        saved = json.loads((folder / "history.json").read_text())
        self.history, self.samples = saved["history"], saved["samples"]


def ppo_inputs(cfg: PPOStageConfig, run: RunContext) -> dict[str, Path]:
    """What the stage reads: the SFT model, the reward model, its prompts and the evaluation prompts."""
    members = {f"reward_{i}": run.artifact(REWARD_STAGE, f"member_{i}", REWARD_PRODUCER)
               for i in range(cfg.reward_members)}
    return {"sft": run.artifact("sft", "merged", SFT_PRODUCER), **members,
            "prompts": run.data_file(cfg.train_file), "eval": run.data_file("eval_prompts.jsonl")}


def load_value_model(run: RunContext):
    """A value model initialised from the reward model (its body, head and LoRA), ready to train further."""
    return load_reward_model(run, trainable=True)


def make_ppo_trainer(cfg: PPOStageConfig, run: RunContext, callbacks: list[Callable[[dict], None]] | None = None,
                     reward_model=None) -> PPOTrainer:
    """The kit's :class:`PPOTrainer` for a run: policy, reference, value and reward models from its stages.

    Introduced in ``04_ppo``, which builds it in plain sight and calls ``train()``.

    Args:
        cfg: the stage config.
        run: the run (a variant for a lab, so checkpoints stay out of the stage folder).
        callbacks: functions called with each iteration's stats.
        reward_model: the reward to optimise; None = the run's reward model (notebook 03's), its first
            ``cfg.reward_members`` ensemble members; or another model to optimise (a weaker proxy, say).

    Raises:
        MissingArtifactError: no SFT model (notebook 02) or no reward model (notebook 03).
    """
    import torch

    profile = run.profile
    inputs = ppo_inputs(cfg, run)
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(profile, str(inputs["sft"]))
    policy = add_lora(load_model(profile, str(inputs["sft"])), profile)  # adapter off = the SFT model
    prompts = [dict(r) for r in load_records(inputs["prompts"])]
    if reward_model is None:
        reward_model = [load_reward_model(run, member) for member in range(cfg.reward_members)]
    return PPOTrainer(cfg, profile, policy, load_value_model(run), reward_model, tok, prompts,
                      run.stage_dir(STAGE) / "checkpoints", callbacks)


def finish_ppo(trainer: PPOTrainer, cfg: PPOStageConfig, run: RunContext) -> StageResult:
    """Save, measure and mark a trained PPO stage: what follows ``trainer.train()``.

    Saves the policy adapter, the merged PPO policy (what a later DPO stage starts from) and
    the value model; scores greedy replies to held-out prompts before (the adapter off: the SFT
    model) and after with the gold judge, with a paired bootstrap CI of the gain; writes the
    stage's metrics (the per-iteration diagnostics included) and completion marker.
    """
    profile, out = run.profile, run.stage_dir(STAGE)
    inputs = ppo_inputs(cfg, run)
    digest = stage_hash(cfg, profile, inputs)
    records, gold_skipped = gold_prompts(inputs["eval"], cfg.eval_prompts)
    tok = trainer.tokenizer
    measured = before_and_after(trainer.policy, tok, records, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                kl_temperature=cfg.temperature)
    samples = measured.pop("samples")
    save_policy(trainer.policy, tok, out, profile, inputs["sft"])
    save_score_model(trainer.value_model, out / "value_model")
    history = trainer.history
    last = history[-min(5, len(history)):]
    metrics = {
        **measured,
        "gold_skipped_prompts": gold_skipped,
        "final_kl": float(np.mean([h["kl"] for h in last])), "final_reward": float(np.mean([h["reward"] for h in last])),
        "first_reward": history[0]["reward"] if history else None, "steps": trainer.step,
        "resumed_from_step": trainer.resumed_from_step, "history": history, "samples": trainer.samples, "ledger": trainer.ledger.summary(),
    }
    info = {"samples_after": samples.get("after", []), "samples_before": samples.get("before", [])}
    finish_stage(out, digest, cfg, metrics, info, inputs)
    return StageResult(STAGE, out, metrics)


def run_ppo(cfg: PPOStageConfig, run: RunContext, callbacks: list[Callable[[dict], None]] | None = None) -> StageResult:
    """The PPO stage with its cache: skip when done with the same inputs, resume when interrupted.

    Raises:
        MissingArtifactError: no SFT model (notebook 02) or no reward model (notebook 03).
    """
    out = run.stage_dir(STAGE)
    digest = stage_hash(cfg, run.profile, ppo_inputs(cfg, run))
    if completed(out, digest):
        return StageResult(STAGE, out, load_stage_metrics(out), skipped=True)
    checkpoint = reopen_stage(out, out / "checkpoints", digest, cfg.resume, run.profile)
    trainer = make_ppo_trainer(cfg, run, callbacks)
    trainer.train(resume_from=checkpoint)
    return finish_ppo(trainer, cfg, run)
