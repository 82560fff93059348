"""Write an :class:`~zerosearch_trl.evaluation.result.EvaluationResult`: ``results.json``, ``predictions.jsonl``,
``report.md`` and a bar chart of the scores."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from zerosearch_trl.engines.base import ENGINE_KINDS
from zerosearch_trl.evaluation.result import EvaluationResult

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
REPORT_FILE = "report.md"


def write_evaluation(result: EvaluationResult, output_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
    """Write ``results.json``, ``predictions.jsonl``, ``report.md`` and (``plots=True``) ``scores.png``.

    Returns:
        The path of ``report.md``.

    Example:
        >>> import tempfile
        >>> from zerosearch_trl.evaluation.result import summarize
        >>> rows = [{"exact_match": 1.0, "f1": 1.0}]
        >>> result = EvaluationResult({"bm25": {"datasets": {"nq": summarize(rows)}, "overall": summarize(rows)}}, rows)
        >>> write_evaluation(result, tempfile.mkdtemp(), plots=False).name
        'report.md'
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    with (out / PREDICTIONS_FILE).open("w") as handle:
        for row in result.predictions:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    lines = ["# Evaluation", ""]
    config = result.config
    lines.append(
        f"Model `{config.get('model')}`, {config.get('decoding', '?')} decoding, up to {config.get('max_turns')} "
        f"searches per question, every row scored."
    )
    lines += ["", "| engine | dataset | n | EM | cover EM | F1 | searches | answered | turns | s/question | errors |"]
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine_name, block in result.engines.items():
        for name, scores in [*block["datasets"].items(), ("**overall**", block["overall"])]:
            lines.append(
                f"| {engine_name} | {name} | {scores['n']} | {format_score(scores['exact_match'])} | "
                f"{format_score(scores['cover_em'])} | {format_score(scores['f1'])} | {format_score(scores['mean_searches'])} | "
                f"{format_score(scores['answered'])} | {format_score(scores['mean_turns'])} | "
                f"{format_score(scores.get('seconds_per_question'))} | {scores['errors']} |"
            )
    kinds = config.get("engine_kinds") or {}
    if kinds:
        lines += ["", "What each engine's scores measure:", ""]
        lines += [f"- `{name}`: {ENGINE_KINDS.get(kind, kind)}." for name, kind in kinds.items()]
    if plots and _plot_scores(result, out / "scores.png"):
        lines += ["", "![Scores per dataset and engine](scores.png)"]
    failed = [row for row in result.predictions if row.get("error")]
    if failed:
        lines += ["", f"{len(failed)} rows failed and were scored 0:", ""]
        lines += [f"- `{row['id']}` ({row['engine']}): {row['error']}" for row in failed[:20]]
    report = out / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    return report


def format_score(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _plot_scores(result: EvaluationResult, path: Path) -> bool:
    """Grouped bars of EM and F1 per dataset (and engine); False when matplotlib cannot draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is missing: no scores.png (pip install matplotlib).")
        return False
    groups = [(e, d) for e, block in result.engines.items() for d in [*block["datasets"], "overall"]]
    values = {
        metric: [
            (result.engines[e]["overall"] if d == "overall" else result.engines[e]["datasets"][d])[metric] or 0.0
            for e, d in groups
        ]
        for metric in ("exact_match", "f1")
    }
    labels = [d if len(result.engines) == 1 else f"{d}\n({e})" for e, d in groups]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4))
    width = 0.38
    for offset, (metric, heights) in zip((-width / 2, width / 2), values.items()):
        axes.bar([i + offset for i in range(len(groups))], heights, width, label=metric)
    axes.set_xticks(range(len(groups)), labels, fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    axes.set_title("Scores per dataset" + (" and engine" if len(result.engines) > 1 else ""))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
