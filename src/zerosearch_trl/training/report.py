"""Run report: ``report.md`` with plots from the per-step metrics of a training run.

:func:`write_report` turns ``metrics.jsonl`` (written as the run goes by
:class:`~zerosearch_trl.training.logs.MetricsJsonlCallback`) (or a list of log dicts, e.g. ``trainer.state.log_history``) into
``report.md``: a summary table, PNG plots of reward, searches per episode, the curriculum's noise p, KL, entropy
and completion length over the steps, and a table of run details. :func:`summary_lines` is the short
end-of-run summary for a terminal.

Key names are those GRPOTrainer logs (``reward``, ``rewards/<function>/mean``, ``kl``, ``entropy``,
``completions/mean_length``, ``completions/clipped_ratio``...), those the search rollout logs
(``search/searches_per_episode``, ``search/episodes_with_search``...), and the curriculum's ``curriculum/noise_p``.
The plots use matplotlib, a dependency of the package, imported only when drawing.

Example:
    >>> import tempfile
    >>> rows = [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.4}]
    >>> path = write_report(tempfile.mkdtemp(), rows, plots=False)
    >>> "| `reward` | 0.1 | 0.4 | 0.1 | 0.4 | 2 | 0 |" in path.read_text()
    True
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

from zerosearch_trl.training.logs import is_finite_number, read_metrics

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


class _Plot(NamedTuple):
    name: str  # file stem
    title: str
    patterns: tuple[str, ...]  # metric keys, fnmatch-style: one line per matching key
    only_when_logged: bool = False  # one algorithm's metrics: not listed as skipped in runs of the others


PLOTS = (
    _Plot("reward", "Reward (total and per reward function)", ("reward", "rewards/*/mean")),
    _Plot("searches", "Searches per episode", ("search/searches_per_episode", "search/episodes_with_search")),
    _Plot("noise_p", "Noise probability p (curriculum)", ("curriculum/noise_p",)),
    _Plot("kl", "KL divergence to the reference model", ("kl", "ppo/kl")),
    _Plot(
        "critic",
        "PPO critic: value loss and explained variance",
        ("ppo/value_loss", "ppo/explained_variance"),
        only_when_logged=True,
    ),
    _Plot("entropy", "Entropy", ("entropy",)),
    _Plot("completion_length", "Mean completion length (tokens)", ("completions/mean_length",)),
)

# The summary table's rows, in this order; only the keys that were logged appear.
SUMMARY_PATTERNS = (
    "reward",
    "rewards/*/mean",
    "reward_std",
    "search/*",
    "curriculum/noise_p",
    "kl",
    "ppo/*",
    "entropy",
    "completions/mean_length",
    "completions/clipped_ratio",
    "loss",
)


def write_report(
    output_dir: str | os.PathLike[str],
    metrics: Sequence[Mapping[str, Any]] | None = None,
    *,
    title: str = "zerosearch-trl training report",
    extra: Mapping[str, Any] | None = None,
    events: Iterable[object] | None = None,
    heldout: Mapping[str, Mapping[Any, Mapping[str, Any]]] | None = None,
    plots: bool = True,
) -> Path:
    """Writes ``report.md`` and its PNG plots (under ``plots/``) into a run's output folder.

    The report holds a summary table (first and last value, min and max of each key metric; ``Non-finite`` counts
    the steps where it was NaN, inf or null), the plots embedded by relative path, and the ``extra`` details as a
    table. A plot whose metrics were never logged is not drawn; the report lists it as skipped.

    Args:
        output_dir: the run's folder; the report goes there.
        metrics: the logged rows, each with a ``"step"`` key (e.g. ``trainer.state.log_history``); by default
            read from ``output_dir/metrics.jsonl``.
        title: the report's heading.
        extra: run details to list, e.g. the config or ``{"well-formed share at step 0": 0.12}``; dict and list
            values are shown as JSON.
        events: the training guards' events (``TrainingGuardCallback.events``), listed one per line;
            ``None`` leaves the section out.
        heldout: held-out scores by engine, then by step (``summary.json``'s ``heldout_by_engine``): a table and,
            with ``plots``, F1 per engine along the run (the run's own sim-to-real gap when it names a real engine
            and the simulator).
        plots: draw the PNG plots (needs matplotlib); ``False`` writes the markdown alone.

    Returns:
        The path of ``report.md``.

    Raises:
        ImportError: ``plots=True`` and matplotlib is not installed.
        FileNotFoundError: ``metrics`` is not given and there is no ``metrics.jsonl``.
        ValueError: a row has no ``"step"``.

    Example:
        >>> import tempfile
        >>> rows = [{"step": 1, "reward": 0.2, "kl": 0.0}, {"step": 2, "reward": 0.5, "kl": 0.01}]
        >>> path = write_report(tempfile.mkdtemp(), rows, extra={"model": "SmolLM2-135M"})
        >>> sorted(p.name for p in (path.parent / "plots").iterdir())
        ['kl.png', 'reward.png']
    """
    if plots:
        _require_matplotlib()
    output_dir = Path(output_dir)
    rows = read_metrics(output_dir) if metrics is None else list(metrics)
    for index, row in enumerate(rows):
        if "step" not in row:
            raise ValueError(f"Metrics row {index} has no 'step' key: {dict(row)!r}")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    output_dir.mkdir(parents=True, exist_ok=True)

    runtime = _runtime(rows)
    took = f", run time {_duration(runtime)}" if runtime is not None else ""
    sections = [[f"# {title}", "", f"{len(rows)} log rows up to step {_last_step(rows)}{took}."]]
    sections.append(_summary_section(rows, keys))
    if plots:
        sections.append(_plots_section(rows, keys, output_dir))
    if heldout:
        sections.append(_heldout_section(heldout, output_dir if plots else None))
    if events is not None:
        sections.append(["## Training guards", "", *([f"- {_cell(str(e))}" for e in events] or ["No guard fired."])])
    if extra:
        details = [f"| {_cell(str(key))} | {_cell(_value_text(value))} |" for key, value in extra.items()]
        sections.append(["## Run details", "", "| Key | Value |", "|---|---|", *details])

    report = output_dir / REPORT_FILE
    report.write_text("\n\n".join("\n".join(section) for section in sections) + "\n", encoding="utf-8")
    return report


def summary_lines(metrics: Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> list[str]:
    """A one-screen end-of-run summary: steps, time, and first → last reward, searches per episode and noise p.

    Args:
        metrics: the logged rows (each with a ``"step"`` key), or a ``metrics.jsonl`` file or the folder holding it.

    Returns:
        Plain-text lines, ready to print.

    Example:
        >>> rows = [{"step": 1, "reward": 0.1, "search/searches_per_episode": 0.0},
        ...         {"step": 2, "reward": 0.45, "search/searches_per_episode": 1.25},
        ...         {"step": 2, "train_runtime": 75.0}]
        >>> print("\\n".join(summary_lines(rows)))
        Run summary: 2 steps in 1m 15s
          reward                 0.1 -> 0.45  (min 0.1, max 0.45)
          searches per episode   0 -> 1.25  (min 0, max 1.25)
          noise p                not logged
    """
    rows = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    runtime = _runtime(rows)
    took = f" in {_duration(runtime)}" if runtime is not None else " (no run time logged)"
    lines = [f"Run summary: {_last_step(rows)} steps{took}"]
    for label, key in (
        ("reward", "reward"),
        ("searches per episode", "search/searches_per_episode"),
        ("noise p", "curriculum/noise_p"),
    ):
        stats = _stats(rows, key)
        if stats.first is None:
            lines.append(f"  {label:<22} not logged")
        else:
            lines.append(
                f"  {label:<22} {_fmt(stats.first)} -> {_fmt(stats.last)}  (min {_fmt(stats.min)}, max {_fmt(stats.max)})"
            )
    return lines


def _summary_section(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    lines = [
        "## Summary",
        "",
        "| Metric | First | Last | Min | Max | Logged | Non-finite |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in _expand(SUMMARY_PATTERNS, keys):
        stats = _stats(rows, key)
        lines.append(
            f"| `{key}` | {_fmt(stats.first)} | {_fmt(stats.last)} | {_fmt(stats.min)} | {_fmt(stats.max)} "
            f"| {stats.logged} | {stats.non_finite} |"
        )
    return lines


def _plots_section(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], output_dir: Path) -> list[str]:
    """Draws each plot that has data into ``output_dir/plots/``; the markdown embeds them and lists the rest."""
    lines = ["## Plots"]
    skipped = []
    for plot in PLOTS:
        series = {key: _series(rows, key) for key in _expand(plot.patterns, keys)}
        series = {key: points for key, points in series.items() if points[0]}
        if not series:
            if not plot.only_when_logged:
                skipped.append(f"{plot.title} (`{'`, `'.join(plot.patterns)}`)")
            continue
        relative = f"{PLOTS_DIR}/{plot.name}.png"
        (output_dir / PLOTS_DIR).mkdir(exist_ok=True)
        _draw(plot.title, series, output_dir / relative)
        lines += ["", f"### {plot.title}", "", f"![{plot.title}]({relative})"]
    if skipped:
        lines += ["", "Skipped (never logged): " + "; ".join(skipped) + "."]
    return lines


HELDOUT_COLUMNS = (("f1", "F1"), ("exact_match", "EM"), ("mean_searches", "searches"), ("well_formed", "well-formed"))


def _heldout_section(heldout: Mapping[str, Mapping[Any, Mapping[str, Any]]], output_dir: Path | None) -> list[str]:
    """The held-out scores per engine and step as a table, and their F1 as one plot (when ``output_dir``)."""
    lines = [
        "## Held-out scores (greedy)",
        "",
        "| Engine | Step | " + " | ".join(label for _, label in HELDOUT_COLUMNS) + " |",
        "|---|---|" + "---|" * len(HELDOUT_COLUMNS),
    ]
    series = {}
    for engine, by_step in heldout.items():
        steps = sorted(by_step, key=int)
        for step in steps:
            cells = " | ".join(_fmt(by_step[step].get(key)) for key, _ in HELDOUT_COLUMNS)
            lines.append(f"| {_cell(engine)} | {step} | {cells} |")
        points = [
            (int(step), float(by_step[step]["f1"])) for step in steps if is_finite_number(by_step[step].get("f1"))
        ]
        series[engine] = ([step for step, _ in points], [value for _, value in points])
    if output_dir is not None and any(steps for steps, _ in series.values()):
        relative = f"{PLOTS_DIR}/heldout_f1.png"
        (output_dir / PLOTS_DIR).mkdir(exist_ok=True)
        _draw("Held-out F1 per engine", series, output_dir / relative)
        lines += ["", f"![Held-out F1 per engine]({relative})"]
    return lines


class _Stats(NamedTuple):
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    logged: int  # rows holding the key
    non_finite: int  # of those, rows where it was NaN, inf or null


def _stats(rows: Sequence[Mapping[str, Any]], key: str) -> _Stats:
    _, values = _series(rows, key)
    logged = sum(key in row for row in rows)
    if not values:
        return _Stats(None, None, None, None, logged, logged)
    return _Stats(values[0], values[-1], min(values), max(values), logged, logged - len(values))


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The (steps, values) where ``key`` has a finite value."""
    points = [(row["step"], float(row[key])) for row in rows if is_finite_number(row.get(key))]
    return [step for step, _ in points], [value for _, value in points]


def _expand(patterns: Iterable[str], keys: Sequence[str]) -> list[str]:
    """The keys matching each pattern in turn (sorted within a pattern), each once."""
    matched = (key for pattern in patterns for key in sorted(k for k in keys if fnmatchcase(k, pattern)))
    return list(dict.fromkeys(matched))


def _runtime(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The trainer's end-of-training ``train_runtime`` (seconds), if the run got that far."""
    return next((row["train_runtime"] for row in reversed(rows) if is_finite_number(row.get("train_runtime"))), None)


def _last_step(rows: Sequence[Mapping[str, Any]]) -> int:
    return max((int(row["step"]) for row in rows), default=0)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell or list item."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The report's plots need matplotlib (a dependency of zerosearch-trl): pip install matplotlib "
            "(or call write_report(..., plots=False) for the markdown alone)."
        ) from error


def _draw(title: str, series: Mapping[str, tuple[list[int], list[float]]], path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # A bare Figure renders with the Agg canvas on savefig, without pyplot: no global backend switch, no GUI.
    figure = Figure(figsize=(7, 3.5), dpi=100, layout="constrained")
    axes = figure.subplots()
    for key, (steps, values) in series.items():
        axes.plot(steps, values, marker=".", label=key)
    axes.set(title=title, xlabel="step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path, format="png")
