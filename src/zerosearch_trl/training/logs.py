"""The run's logs: what callbacks add to a trainer's logs, and ``metrics.jsonl``, one line per logged step.

:class:`MetricsJsonlCallback` appends each logged step of a ``transformers``/TRL trainer to
``<output_dir>/metrics.jsonl`` as it happens, so a run that dies still leaves its history behind;
:func:`read_metrics` reads it back. :func:`attach_first` and :func:`add_to_logs` let a callback's own keys
(``curriculum/noise_p``, ``heldout/f1``...) reach ``report_to`` integrations and that file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def attach_first(trainer: Any, callback: TrainerCallback) -> None:
    """Make ``callback`` the first of ``trainer``'s callbacks, so that what it adds to the logs in ``on_log``
    reaches the ``report_to`` integrations and :class:`MetricsJsonlCallback`, which run after it."""
    callbacks = trainer.callback_handler.callbacks
    if callback in callbacks:
        callbacks.remove(callback)
    callbacks.insert(0, callback)


def add_to_logs(state: TrainerState, logs: dict[str, Any], values: Mapping[str, Any], overwrite: bool = True) -> None:
    """Add ``values`` to the ``logs`` an ``on_log`` callback receives, and to the step's ``log_history`` entry.

    ``Trainer.log`` appends a copy of ``logs`` to ``state.log_history`` before it calls ``on_log``, so the copy is
    updated too (``overwrite=False`` keeps keys the copy already has).
    """
    logs.update(values)
    if state.log_history and state.log_history[-1].get("step") == state.global_step:
        entry = state.log_history[-1]
        entry.update(values if overwrite else {k: v for k, v in values.items() if k not in entry})


class MetricsJsonlCallback(TrainerCallback):
    """Appends every logged step to a JSON-lines file: ``{"step": global_step, **logs}``, one line each.

    Each line is flushed as it is written. Non-finite floats (NaN, inf) are written as ``null``, so every line is
    strict JSON. At the start of training, lines past the current step are dropped: a fresh run (step 0) starts
    an empty file, and a run resumed from a checkpoint keeps the history up to that checkpoint only. Only the
    main process writes. Callbacks run in list order: put this one after those that add keys to the logs (such
    as ``CurriculumCallback``, which adds ``curriculum/noise_p``).

    Args:
        path: the file to write, usually ``<output_dir>/metrics.jsonl``.

    Example:
        >>> callback = MetricsJsonlCallback("runs/demo/metrics.jsonl")
        >>> trainer = GRPOTrainer(..., callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path) if row.get("step", 0) <= state.global_step]
        self.path.write_text("".join(_json_line(row) for row in kept), encoding="utf-8")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(_json_line({"step": state.global_step, **logs}))
            file.flush()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads a ``metrics.jsonl`` file, or the one in a run's output folder.

    A partial last line (a run killed while writing it) is skipped with a warning; a bad line elsewhere is an
    error.

    Args:
        path: the JSON-lines file, or the folder that holds ``metrics.jsonl``.

    Returns:
        One dict per line, in file order.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: a line other than the last is not JSON.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "metrics.jsonl").write_text('{"step": 1, "reward": null}\\n{"step": 2, "rew')
        >>> read_metrics(folder)
        [{'step': 1, 'reward': None}]
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No metrics file at {path}: attach MetricsJsonlCallback to the trainer, or pass the metrics to "
            "write_report as a list of dicts (e.g. trainer.state.log_history)."
        )
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
            logger.warning("Skipping the partial last line of %s (the run stopped while writing it).", path)
    return rows


def is_finite_number(value: Any) -> bool:
    """Whether a logged value is a real, finite number (not None, NaN, inf, a bool or a string).

    Example:
        >>> [is_finite_number(v) for v in (0.5, 3, None, float("nan"), True)]
        [True, True, False, False, False]
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_line(row: Mapping[str, Any]) -> str:
    return json.dumps({key: _jsonable(value) for key, value in row.items()}, allow_nan=False, default=str) + "\n"


def _jsonable(value: Any) -> Any:
    # Trainers may log numpy or torch scalars; .item() turns them into Python numbers first.
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/Infinity
    return value
