"""Configuration of the SFT stage (``run_sft``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class SFTStageConfig:
    """Supervised fine-tuning with TRL's ``SFTTrainer``.

    Parameters that control training:
        max_steps, learning_rate, batch_size, assistant_only_loss, group_by_length, packing, padding_free, seed.
    Parameters that control checkpoints, evaluation and display:
        eval_steps, save_steps, logging_steps, resume, eval_prompts, max_new_tokens, progress.
    ``None`` means "take it from the profile" (budgets, learning rate, batch size, report_to).
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; None = the profile's budgets.sft"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = the profile's"})
    batch_size: int | None = field(default=None, metadata={"help": "sequences per device per step; None = the profile's"})
    assistant_only_loss: bool = field(default=True, metadata={"help": "loss on the assistant's tokens only (False: every token)"})
    group_by_length: bool = field(default=True, metadata={"help": "batch conversations of similar length (less padding)"})
    packing: bool = field(default=False, metadata={"help": "pack several conversations into each sequence"})
    padding_free: bool = field(default=False, metadata={"help": "concatenate the batch without padding (flash-attention style)"})
    eval_steps: int = field(default=50, metadata={"help": "steps between evaluation-loss measurements"})
    save_steps: int = field(default=50, metadata={"help": "steps between checkpoints (for resuming)"})
    logging_steps: int = field(default=10, metadata={"help": "steps between logged training losses"})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint of an unfinished run"})
    eval_prompts: int = field(default=60, metadata={"help": "held-out prompts scored by the gold judge before and after"})
    max_new_tokens: int = field(default=64, metadata={"help": "longest generated reply in the gold evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and data order"})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar with the running loss"})
    report_to: str | None = field(default=None, metadata={"help": "none, tensorboard, trackio, wandb; None = the profile's"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"expected a positive integer, got {value}", key=name)
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"expected 0 < learning_rate < 1, got {self.learning_rate}", key="learning_rate")
        for name in ("eval_steps", "save_steps", "logging_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"expected a positive integer, got {getattr(self, name)}", key=name)
        if self.eval_prompts < 0:
            raise ConfigError("expected eval_prompts >= 0", key="eval_prompts")
        if self.packing and self.padding_free:
            raise ConfigError("choose packing or padding_free, not both", key="padding_free")
