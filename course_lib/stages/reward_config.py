"""Configuration of the reward-model stage (``run_reward``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_fields
from ..errors import ConfigError


@dataclass
class RewardStageConfig:
    """Reward modelling with TRL's ``RewardTrainer``: a scalar head on the SFT model.

    Parameters that control training:
        max_steps, learning_rate, batch_size, group_by_length, swap_pairs, near_miss_pairs, fact_over_form_pairs,
        seed, ensemble_size, save_steps, resume.
    Parameters that control evaluation:
        kfold, bootstrap_resamples, calibration_bins, length_probe_pairs.
    ``None`` means "take it from the profile".
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps per model; None = the profile's budgets.reward", "min": 1})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = the profile's (a fifth of it for a model trained whole: lora.reward false)", "above": 0, "below": 1})
    batch_size: int | None = field(default=None, metadata={"help": "preference pairs per device per step; None = the profile's", "min": 1})
    group_by_length: bool = field(default=True, metadata={"help": "batch pairs of similar length (random batches of the curated pairs are half padding)"})
    swap_pairs: float = field(default=1.0, metadata={"help": "share of training prompts that also get an answer-swap pair: its good answer against another prompt's (teaches reading the question); 0 = off", "min": 0, "max": 1})
    near_miss_pairs: float = field(default=1.0, metadata={"help": "share of training pairs that also get a near-miss pair: the good answer against the same answer at another triage level or under another function name; 0 = off", "min": 0, "max": 1})
    fact_over_form_pairs: float = field(default=0.35, metadata={"help": "share of near-miss pairs that also get two pairs weighing a fact against a habit: the good answer without its disclaimer or code block over the near miss, and the near miss over itself without them; 0 = off", "min": 0, "max": 1})
    ensemble_size: int = field(default=1, metadata={"help": "reward models trained with different seeds (uncertainty per pair)", "min": 1})
    kfold: int = field(default=0, metadata={"help": "folds for cross-validated accuracy on the training pairs; 0 = off", "min": 0})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "resamples of the accuracy's bootstrap CI", "min": 1})
    calibration_bins: int = field(default=8, metadata={"help": "bins of the calibration curve", "min": 2})
    length_probe_pairs: int = field(default=60, metadata={"help": "pairs that differ only in length, for the length-bias probe; 0 = off", "min": 0})
    train_file: str = field(default="prefs_train.jsonl", metadata={"help": "preference file in <run>/data (or labels from the widget)"})
    save_steps: int = field(default=50, metadata={"help": "steps between checkpoints of each ensemble member (for resuming)", "min": 1})
    resume: bool = field(default=True, metadata={"help": "continue each member from its last checkpoint of an unfinished run"})
    seed: int = field(default=0, metadata={"help": "seed of the first ensemble member (others add 1, 2, ...)", "min": 0})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar while the first model trains"})
    report_to: str | None = field(default=None, metadata={"help": "none, tensorboard, trackio, wandb; None = the profile's"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.kfold == 1:
            raise ConfigError("expected kfold = 0 (off) or >= 2, got 1", key="kfold")
