"""What a checkpoint carries besides TRL's own files: how its policy was prompted.

A checkpoint folder is a model folder: ``zerosearch-trl eval --model runs/x/checkpoint-200`` must play it with the
prompt it was trained with, so :class:`PromptSettingsCallback` writes
:data:`~zerosearch_trl.prompts.PROMPT_SETTINGS_FILE` into every checkpoint as it is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from zerosearch_trl.prompts import PromptSettings


class PromptSettingsCallback(TrainerCallback):
    """Writes ``settings`` into each checkpoint folder the trainer saves (main process only).

    Example:
        >>> callback = PromptSettingsCallback(PromptSettings("one_shot"))
        >>> trainer = GRPOTrainer(..., callbacks=[callback])  # doctest: +SKIP
        >>> callback.settings.prompt_style
        'one_shot'
    """

    def __init__(self, settings: PromptSettings) -> None:
        self.settings = settings

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            self.settings.save(folder)
