"""The end of the training job: ``summary.json``, ``report.md`` (with the run's details) and a one-screen summary.

Example:
    >>> pair((0.25, float("nan")))
    '0.25 / -'
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zerosearch_trl.training.config import JobArguments

PROBE_LABEL = "held-out first turns that search (start / after warm start / end)"


def finish_run(
    trainer: Any,
    engine: Any,
    guard: Any,
    heldout_eval: Any,
    probes: Mapping[str, Any],
    args: JobArguments,
    *,
    warm: bool,
    started: float,
    n_rows: tuple[int, int],
) -> dict[str, Any]:
    """Summarise a finished run; the main process writes ``summary.json`` and ``report.md`` and prints a summary.

    Args:
        trainer: the trainer after ``train()``.
        engine: the engine it trained against.
        guard: its :class:`~zerosearch_trl.training.guards.TrainingGuardCallback`.
        heldout_eval: its :class:`~zerosearch_trl.training.heldout.SearchEvalCallback`, or ``None``.
        probes: the probe's shares at ``"start"``, ``"after_warm_start"`` and ``"end"`` (``None`` where not run).
        args: the job's configuration.
        warm: whether a warm start ran.
        started: ``time.monotonic()`` at the start of the job.
        n_rows: training and held-out questions.

    Returns:
        The summary (also in ``summary.json``).
    """
    import torch

    history = trainer.state.log_history
    summary: dict[str, Any] = {
        "output_dir": str(Path(args.training.output_dir)),
        "steps": trainer.state.global_step,
        "seconds": round(time.monotonic() - started, 1),
        "warm_start": warm,
        "first_turn_shares": dict(probes),
        "episodes_with_search": first_and_last(history, "search/episodes_with_search"),
        "well_formed_episodes": first_and_last(history, "search/well_formed_episodes"),
        "reward": first_and_last(history, "reward"),
        "heldout": {str(step): scores for step, scores in heldout_eval.history} if heldout_eval else None,
        "heldout_by_engine": _by_engine(heldout_eval),
        "engine": {"name": engine.name, "stats": engine.stats.as_dict() if hasattr(engine, "stats") else None},
        "guard_events": [str(event) for event in guard.events],
    }
    if torch.cuda.is_available():  # this process's peak: policy, reference model and an in-process simulator
        summary["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if trainer.accelerator.is_main_process:
        _write_and_print(summary, guard, heldout_eval, args, n_rows)
    return summary


def _write_and_print(
    summary: dict[str, Any], guard: Any, heldout_eval: Any, args: JobArguments, n_rows: tuple[int, int]
) -> None:
    from zerosearch_trl.training.report import summary_lines, write_report

    output_dir = Path(summary["output_dir"])
    shares = summary["first_turn_shares"]
    searching = " / ".join(
        "-" if share is None else f"{share['search']:.2f}"
        for share in (shares["start"], shares["after_warm_start"], shares["end"])
    )
    algorithm = args.script.algorithm
    if algorithm == "reinforce":
        algorithm += f" (baseline: {getattr(args.training, 'reinforce_baseline', 'batch_mean')})"
    details = {
        "model": args.model.model_name_or_path or "embedded SmolLM2-135M-Instruct",
        "algorithm": algorithm,
        "dataset": args.script.dataset or f"demo task ({n_rows[0]} train / {n_rows[1]} held-out questions)",
        "warm start": summary["warm_start"],
        PROBE_LABEL: searching,
        "episodes that search (first step / last step)": pair(summary["episodes_with_search"]),
        "well-formed episodes (first step / last step)": pair(summary["well_formed_episodes"]),
        **heldout_lines(heldout_eval),
        "config": json.dumps(
            {"script": asdict(args.script), "engine": asdict(args.engine), "curriculum": asdict(args.curriculum)}
        ),
    }
    summary["report"] = str(
        write_report(output_dir, extra=details, events=guard.events, heldout=summary["heldout_by_engine"])
    )
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for line in summary_lines(output_dir / "metrics.jsonl"):
        print(line)
    print(f"{PROBE_LABEL[0].upper()}{PROBE_LABEL[1:]}: {searching}")
    for label, value in heldout_lines(heldout_eval).items():
        print(f"{label}: {value}")
    print(f"Model, metrics.jsonl and report.md are in {output_dir}")


def first_and_last(history: Sequence[dict[str, Any]], key: str) -> tuple[Any, Any]:
    """The first and the last numeric value of ``key`` in a trainer's log history (``None`` where it has none)."""
    values = [row[key] for row in history if isinstance(row.get(key), (int, float))]
    return (values[0], values[-1]) if values else (None, None)


ENGINE_LABELS = {"simulator_told_answer": "the simulator, told the answers: an upper bound"}
"""How the report names a held-out engine whose name alone would mislead."""


def _by_engine(callback: Any) -> dict[str, dict[str, Any]] | None:
    if callback is None or not callback.engine_history:
        return None
    names = list(callback.engine_history[0][1])
    return {name: {str(step): scores[name] for step, scores in callback.engine_history} for name in names}


def heldout_lines(callback: Any) -> dict[str, str]:
    """Report lines of the held-out evaluation: each metric from the first to the last evaluation, per engine."""
    if callback is None or not callback.engine_history:
        return {}
    (first_step, first), (last_step, last) = callback.engine_history[0], callback.engine_history[-1]
    lines = {}
    for name in first:
        against = ENGINE_LABELS.get(name, name)
        title = (
            f"held-out, greedy, {first[name]['n']} questions, against {against} (step {first_step} / step {last_step})"
        )
        for key, label in (("f1", "F1"), ("exact_match", "exact match"), ("mean_searches", "searches per question")):
            lines[f"{title}: {label}"] = pair((first[name][key], last[name][key]))
    return lines


def pair(values: tuple[Any, Any]) -> str:
    """Two values as ``"a / b"``, with ``-`` for a missing or NaN one."""
    return " / ".join("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}" for v in values)
