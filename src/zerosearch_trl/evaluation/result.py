"""What an evaluation returns: per engine and dataset, the mean of each per-row score (:data:`METRICS`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

METRICS = ("exact_match", "cover_em", "f1", "mean_searches", "answered", "mean_turns", "well_formed")
"""The per-row scores averaged in every summary (``answered`` and ``well_formed`` are shares)."""


@dataclass
class EvaluationResult:
    """Scores of one agent: ``engines[engine]["datasets"][dataset]`` and ``engines[engine]["overall"]``.

    Attributes:
        engines: per engine, the per-dataset and overall summaries (``n``, :data:`METRICS`, ``errors``,
            ``seconds_per_question``).
        predictions: one dict per row and engine (``id``, ``data_source``, ``engine``, ``question``,
            ``golden_answers``, ``prediction``, the scores, ``searches``, ``documents``, ``turns``, ``completion``,
            ``error``).
        config: the settings of the run.

    Example:
        >>> rows = [{"exact_match": 1.0, "f1": 1.0}, {"exact_match": 0.0, "f1": 0.5}]
        >>> result = EvaluationResult({"bm25": {"datasets": {"nq": summarize(rows)}, "overall": summarize(rows)}}, rows)
        >>> result.overall["f1"], list(result.datasets)
        (0.75, ['nq'])
    """

    engines: dict[str, dict[str, Any]]
    predictions: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        """Per-dataset summaries of the first engine."""
        return next(iter(self.engines.values()))["datasets"]

    @property
    def overall(self) -> dict[str, Any]:
        """Overall summary of the first engine."""
        return next(iter(self.engines.values()))["overall"]

    def to_json(self) -> dict[str, Any]:
        """``{"datasets", "overall"}`` of the first engine, ``"engines"`` (all of them) and ``"config"``."""
        return {"datasets": self.datasets, "overall": self.overall, "engines": self.engines, "config": self.config}


def summarize(rows: Sequence[Mapping[str, Any]], seconds: float | None = None) -> dict[str, Any]:
    """Mean of :data:`METRICS` over ``rows``, with ``n``, ``errors`` and (given ``seconds``) time per question.

    Example:
        >>> summarize([{"exact_match": 1.0, "f1": 1.0}, {"exact_match": 0.0, "f1": 0.5}])["f1"]
        0.75
    """
    n = len(rows)
    summary: dict[str, Any] = {"n": n}
    for metric in METRICS:
        values = [float(row[metric]) for row in rows if row.get(metric) is not None]
        summary[metric] = sum(values) / len(values) if values else None
    summary["errors"] = sum(bool(row.get("error")) for row in rows)
    if seconds is not None:
        summary["seconds"] = seconds
        summary["seconds_per_question"] = seconds / n if n else None
    return summary
