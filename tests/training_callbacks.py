"""Trainer callbacks the stage tests share."""
from __future__ import annotations

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """Simulates a crash: raises once training reaches ``step`` (before that step's checkpoint is written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"stopped at step {state.global_step}")
