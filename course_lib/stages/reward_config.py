"""Configuration of the reward-model stage (``run_reward``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class RewardStageConfig:
    """Reward modelling with TRL's ``RewardTrainer``: a scalar head on the SFT model.

    Parameters that control training:
        max_steps, learning_rate, batch_size, seed, ensemble_size.
    Parameters that control evaluation:
        kfold, bootstrap_resamples, calibration_bins, length_probe_pairs.
    ``None`` means "take it from the profile".
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps per model; None = the profile's budgets.reward"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = the profile's"})
    batch_size: int | None = field(default=None, metadata={"help": "preference pairs per device per step; None = the profile's"})
    ensemble_size: int = field(default=1, metadata={"help": "reward models trained with different seeds (uncertainty per pair)"})
    kfold: int = field(default=0, metadata={"help": "folds for cross-validated accuracy on the training pairs; 0 = off"})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "resamples of the accuracy's bootstrap CI"})
    calibration_bins: int = field(default=8, metadata={"help": "bins of the calibration curve"})
    length_probe_pairs: int = field(default=60, metadata={"help": "pairs that differ only in length, for the length-bias probe"})
    train_file: str = field(default="prefs_train.jsonl", metadata={"help": "preference file in <run>/data (or labels from the widget)"})
    seed: int = field(default=0, metadata={"help": "seed of the first ensemble member (others add 1, 2, ...)"})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar while the first model trains"})
    report_to: str | None = field(default=None, metadata={"help": "none, tensorboard, trackio, wandb; None = the profile's"})

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"expected a positive integer, got {self.max_steps}", key="max_steps")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"expected 0 < learning_rate < 1, got {self.learning_rate}", key="learning_rate")
        if self.ensemble_size < 1:
            raise ConfigError(f"expected ensemble_size >= 1, got {self.ensemble_size}", key="ensemble_size")
        if self.kfold == 1 or self.kfold < 0:
            raise ConfigError(f"expected kfold = 0 (off) or >= 2, got {self.kfold}", key="kfold")
        if self.calibration_bins < 2:
            raise ConfigError("expected calibration_bins >= 2", key="calibration_bins")
