"""Configuration of the SFT stage (``run_sft``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_fields
from ..errors import ConfigError

PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")
"""TRL's packing strategies: best-fit decreasing (each conversation whole, attention kept inside it through
``position_ids``), the same splitting overlong ones, and ``wrapped``, which cuts the concatenated stream into
rows with plain causal attention, so a token attends to the conversations before it (docs/benchmarks.md)."""


@dataclass
class SFTStageConfig:
    """Supervised fine-tuning with TRL's ``SFTTrainer``.

    Parameters that control training:
        max_steps, learning_rate, batch_size, assistant_only_loss, group_by_length, packing, packing_strategy,
        padding_free, seed.
    Parameters that control checkpoints, evaluation and display:
        eval_steps, save_steps, logging_steps, resume, eval_prompts, max_new_tokens, progress.
    ``None`` means "take it from the profile" (budgets, learning rate, batch size, report_to).
    """

    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; None = the profile's budgets.sft", "min": 1})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate; None = the profile's", "above": 0, "below": 1})
    batch_size: int | None = field(default=None, metadata={"help": "sequences per device per step; None = the profile's", "min": 1})
    assistant_only_loss: bool = field(default=True, metadata={"help": "loss on the assistant's tokens only (False: every token)"})
    group_by_length: bool = field(default=True, metadata={"help": "batch conversations of similar length (less padding)"})
    packing: bool = field(default=False, metadata={"help": "pack several conversations into each sequence"})
    packing_strategy: str = field(default="bfd", metadata={"help": f"how packing fills a sequence: one of {', '.join(PACKING_STRATEGIES)} (wrapped lets attention cross conversations)"})
    padding_free: bool = field(default=False, metadata={"help": "concatenate the batch without padding (flash-attention style)"})
    eval_steps: int = field(default=50, metadata={"help": "steps between evaluation-loss measurements", "min": 1})
    save_steps: int = field(default=50, metadata={"help": "steps between checkpoints (for resuming)", "min": 1})
    logging_steps: int = field(default=10, metadata={"help": "steps between logged training losses", "min": 1})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint of an unfinished run"})
    eval_prompts: int = field(default=60, metadata={"help": "held-out prompts scored by the gold judge before and after", "min": 0})
    max_new_tokens: int = field(default=64, metadata={"help": "longest generated reply in the gold evaluation", "min": 1})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and data order", "min": 0})
    progress: bool = field(default=True, metadata={"help": "show a live progress bar with the running loss"})
    report_to: str | None = field(default=None, metadata={"help": "none, tensorboard, trackio, wandb; None = the profile's"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.packing_strategy not in PACKING_STRATEGIES:
            raise ConfigError(f"expected one of {', '.join(PACKING_STRATEGIES)}, got {self.packing_strategy!r}",
                              key="packing_strategy")
        if self.packing and self.padding_free:
            raise ConfigError("choose packing or padding_free, not both", key="padding_free")
