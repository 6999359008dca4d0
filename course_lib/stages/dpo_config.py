"""Configuration of the DPO stage (``run_dpo``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_fields
from ..errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "apo_zero")
"""DPO losses of TRL's ``DPOTrainer`` the kit offers (``sigmoid`` is the paper's)."""


@dataclass
class DPOStageConfig:
    """Direct preference optimisation with TRL's ``DPOTrainer``, from a finished policy (SFT by default).

    Parameters that control training:
        max_steps, learning_rate, batch_size, group_by_length, beta, loss_type, sft_weight, precompute_ref_log_probs, seed.
    Parameters that control where it starts and what it reads:
        start_from, train_file.
    Parameters that control checkpoints, evaluation and display:
        save_steps, logging_steps, resume, eval_prompts, max_new_tokens, kl_temperature, progress, report_to.
    ``None`` means "take it from the profile".
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; None = the profile's budgets.dpo", "min": 1})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = a tenth of the profile's", "above": 0, "below": 1})
    batch_size: int | None = field(default=None, metadata={"help": "preference pairs per device per step; None = the profile's", "min": 1})
    group_by_length: bool = field(default=False, metadata={"help": "batch pairs of similar length: 2.4x faster steps here, but batches "
                                                                   "of one domain at a time lost DPO's gold gain on tiny-cpu"})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull towards the reference (higher: stays closer)", "above": 0})
    loss_type: str = field(default="sigmoid", metadata={"help": f"DPO loss: one of {', '.join(LOSS_TYPES)}"})
    sft_weight: float = field(default=0.0, metadata={"help": "weight of an added SFT loss on the chosen replies (RPO); 0 = off", "min": 0})
    precompute_ref_log_probs: bool = field(default=False, metadata={"help": "score every pair under the reference once, before training"})
    start_from: str = field(default="sft", metadata={"help": "the finished stage whose merged model DPO starts from (sft, ppo)"})
    train_file: str = field(default="prefs_train.jsonl", metadata={"help": "preference file in <run>/data (or labels from the widget)"})
    save_steps: int = field(default=20, metadata={"help": "steps between checkpoints (for resuming)", "min": 1})
    logging_steps: int = field(default=5, metadata={"help": "steps between logged losses and implicit rewards", "min": 1})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint of an unfinished run"})
    eval_prompts: int = field(default=60, metadata={"help": "held-out prompts scored by the gold judge before and after", "min": 0})
    max_new_tokens: int = field(default=96, metadata={"help": "longest generated reply in the gold evaluation and the KL", "min": 1})
    kl_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the replies the KL is measured on (PPO's)", "above": 0})
    seed: int = field(default=0, metadata={"help": "seed of the adapter and the data order", "min": 0})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar with the running loss"})
    report_to: str | None = field(default=None, metadata={"help": "none, tensorboard, trackio, wandb; None = the profile's"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"expected one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}", key="loss_type")
        if self.start_from in ("reward", "dpo") or not self.start_from:
            raise ConfigError(f"expected a policy stage to start from (sft, ppo, ...), got {self.start_from!r}",
                              key="start_from")
