"""A short RLOO trial from a run's SFT model, with TRL's ``RLOOTrainer``: the comparison in ``04_ppo``.

TRL's ``RLOOTrainer`` with the kit's reward models, from the SFT model: notebook 04 sets it next
to the kit's PPO (reward against wall time), and ``benchmarks/preference_feasibility.py`` measures
its gold gain over seeds (``docs/preference_feasibility.md``). It trains a LoRA adapter whose "off"
state is the SFT model, so the KL term measures against the SFT model, never the bare base
(DESIGN.md, "The reference model").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from .models import load_model, load_tokenizer, lora_config
from .stages.base import RunContext, common_training_args
from .stages.lm_head import use_full_logits_on_cpu
from .stages.reward import SFT_PRODUCER, ensemble_scores, load_reward_ensemble, preference_rows


def rloo_trial(run: RunContext, *, seed: int, steps: int, learning_rate: float, beta: float, temperature: float,
               max_new_tokens: int, out_dir: Path, num_generations: int = 4, batch_size: int = 16):
    """TRL's ``RLOOTrainer`` on the preference prompts, rewarded by the mean of the run's reward models
    (all its ensemble members: PPO's reward at its defaults, so the two optimise the same thing).

    Returns:
        The trained trainer: ``trainer.model`` is the RLOO policy, ``trainer.processing_class`` its tokenizer.
    """
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    profile = run.profile
    sft = str(run.artifact("sft", "merged", SFT_PRODUCER))
    tok = load_tokenizer(profile, sft)
    reward_models = load_reward_ensemble(run)
    max_length = profile.model.max_seq_length

    def reward(prompts: Sequence[list[dict[str, str]]], completions: Sequence[list[dict[str, str]]], **_: Any) -> list[float]:
        conversations = [p + c for p, c in zip(prompts, completions)]
        return ensemble_scores(reward_models, tok, conversations, max_length).mean(axis=0).tolist()

    prompts = [{"prompt": r["prompt"]} for r in preference_rows(run, "prefs_train.jsonl")]
    args = RLOOConfig(**_trainer_args(run, out_dir, steps, learning_rate, batch_size, seed), beta=beta,
                      num_generations=num_generations, max_completion_length=max_new_tokens, temperature=temperature,
                      top_p=1.0)
    trainer = RLOOTrainer(model=load_model(profile, sft), reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_list(prompts), processing_class=tok, peft_config=lora_config(profile))
    use_full_logits_on_cpu(trainer.model, temperature=temperature)
    _quiet_with_clock(trainer)
    trainer.train()
    return trainer


def _quiet_with_clock(trainer) -> None:
    """No log dict printed per step, and every logged entry stamped with ``elapsed_s``, the seconds since
    training began, so a TRL trainer's curves can be drawn against wall time next to the kit's PPO (``04_ppo``)."""
    from transformers import PrinterCallback, TrainerCallback

    class ElapsedSeconds(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.log_history:
                state.log_history[-1]["elapsed_s"] = time.time() - self.started

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ElapsedSeconds())


def _trainer_args(run: RunContext, out_dir: Path, steps: int, learning_rate: float, batch_size: int,
                  seed: int) -> dict[str, Any]:
    return common_training_args(run.profile, output_dir=out_dir, max_steps=steps, learning_rate=learning_rate,
                                batch_size=batch_size, seed=seed, report_to="none", logging_steps=1, progress=False)

