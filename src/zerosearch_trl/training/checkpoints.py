"""Checkpoints: what they carry besides TRL's own files, and which one a resume starts from.

A checkpoint folder is a model folder: ``zerosearch-trl eval --model runs/x/checkpoint-200`` must play it with the
prompt it was trained with, so :class:`PromptSettingsCallback` writes
:data:`~zerosearch_trl.prompts.PROMPT_SETTINGS_FILE` into every checkpoint as it is saved.
``--resume_from_checkpoint latest`` (or ``true``) resumes from :func:`latest_checkpoint`, the newest complete one.
"""

from __future__ import annotations

import os
import re
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


RESUME_LATEST = ("latest", "true")
"""``--resume_from_checkpoint`` values that mean the newest complete checkpoint of ``output_dir``."""


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest complete checkpoint folder of ``output_dir``, or ``None``.

    Complete means its ``trainer_state.json`` exists: the trainer writes it after the weights, the optimiser and
    the random states, so a checkpoint half-written when the run was killed is never chosen.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> for step, done in ((1, True), (2, True), (3, False)):  # checkpoint-3: killed while it was written
        ...     (run / f"checkpoint-{step}").mkdir()
        ...     _ = done and (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        >>> Path(latest_checkpoint(run)).name
        'checkpoint-2'
    """
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    folder = Path(output_dir)
    steps = [
        (int(match.group(1)), child)
        for child in (folder.iterdir() if folder.is_dir() else [])
        if (match := pattern.match(child.name)) and (child / "trainer_state.json").is_file()
    ]
    return str(max(steps)[1]) if steps else None


def resolve_resume(value: str | bool | None, output_dir: str | os.PathLike[str]) -> str | None:
    """What ``trainer.train(resume_from_checkpoint=...)`` gets: a given folder as is; ``latest``/``true`` the newest
    complete checkpoint of ``output_dir`` (raising when there is none); nothing otherwise."""
    if value is None or value is False or value == "":
        return None
    if value is True or str(value).lower() in RESUME_LATEST:
        found = latest_checkpoint(output_dir)
        if found is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: {output_dir} holds no complete checkpoint (a checkpoint-N folder "
                "with trainer_state.json); give a checkpoint folder, or start without resuming."
            )
        return found
    return str(value)


class RunAlreadyComplete(Exception):
    """Raised by :class:`CompletedRunGuard` before the first step of a resume whose checkpoint is at ``max_steps``."""


class CompletedRunGuard(TrainerCallback):
    """Stops a resumed run whose checkpoint already reached ``max_steps``, before it trains again.

    The transformers Trainer checks ``max_steps`` only after a step: resumed from the last checkpoint of a run that
    was killed while it wrote its outputs, it would train (and log) one step past ``max_steps``. This callback raises
    :class:`RunAlreadyComplete` at that step's beginning, when the checkpoint's weights and state are loaded and
    nothing has run; the caller catches it and writes the run's outputs.

    Example:
        >>> guard = CompletedRunGuard()
        >>> guard.on_step_begin(None, TrainerState(global_step=3, max_steps=4), TrainerControl()) is None
        True
        >>> guard.on_step_begin(None, TrainerState(global_step=4, max_steps=4), TrainerControl())
        Traceback (most recent call last):
        ...
        zerosearch_trl.training.checkpoints.RunAlreadyComplete: step 4 of 4: the checkpoint ends the run
    """

    def on_step_begin(
        self, args: TrainingArguments | None, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise RunAlreadyComplete(f"step {state.global_step} of {state.max_steps}: the checkpoint ends the run")
