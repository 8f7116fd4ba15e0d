"""Trainer callbacks shared by the LoRA training tests (``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

from transformers import TrainerCallback


class InterruptAt(TrainerCallback):
    """Raise KeyboardInterrupt at the end of optimiser step ``step``, before it is checkpointed (like Ctrl-C)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt
