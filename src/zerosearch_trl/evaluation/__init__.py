"""Evaluation: score a search agent on QA sets with any engine, greedy by default, every row.

:mod:`~zerosearch_trl.evaluation.loop` plays and scores the rows (:func:`evaluate`),
:mod:`~zerosearch_trl.evaluation.result` holds the scores, :mod:`~zerosearch_trl.evaluation.report` writes them.
The callback that scores a held-out set during training is :class:`~zerosearch_trl.training.heldout.SearchEvalCallback`.
"""

from zerosearch_trl.evaluation.loop import evaluate, load_eval_datasets
from zerosearch_trl.evaluation.report import write_evaluation
from zerosearch_trl.evaluation.result import METRICS, EvaluationResult, summarize

__all__ = ["METRICS", "EvaluationResult", "evaluate", "load_eval_datasets", "summarize", "write_evaluation"]
