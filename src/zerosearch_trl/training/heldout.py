"""Held-out scores during training: :class:`SearchEvalCallback` runs :func:`~zerosearch_trl.evaluate` on a QA set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from zerosearch_trl.engines.base import SearchEngine
from zerosearch_trl.evaluation import METRICS, evaluate
from zerosearch_trl.training.logs import add_to_logs, attach_first


class SearchEvalCallback(TrainerCallback):
    """Scores the policy on a held-out QA set during training, greedy, every row, with :func:`~zerosearch_trl.evaluate`.

    It runs at the start of training (``at_start``), every ``eval_steps`` optimisation steps and at the last step;
    each result joins the trainer's logs as ``heldout/<metric>`` (``heldout/f1``, ``heldout/exact_match``,
    ``heldout/mean_searches``...), so ``report_to`` integrations and ``metrics.jsonl`` see it, and
    :attr:`history` keeps ``(step, overall scores)`` of every run, the start included. The engine is the one you
    give: a real engine, or a simulator whose noise the curriculum does not move (TRL's own ``eval_dataset``
    evaluation samples, as training does; this one decodes greedily). Every process evaluates all rows.

    A simulator writes its useful documents from the gold answer, so a score against it measures whether the
    policy copies an answer it is handed: an upper bound. Give a real engine over the same facts as the
    yardstick; a mapping of engines scores each, the first as ``heldout/<metric>`` (and :attr:`history`), the
    others as ``heldout/<name>/<metric>`` (all in :attr:`engine_history`).

    Args:
        dataset: held-out QA rows (anything :func:`evaluate` takes as one dataset).
        engine: the search engine to evaluate with, or a mapping name -> engine (the first is the yardstick).
        eval_steps: optimisation steps between evaluations (``None``: only at the start and the end).
        at_start: also evaluate before the first step.
        prefix: key prefix in the logs.
        **evaluate_kwargs: further :func:`evaluate` settings (``max_turns``, ``prefill``, ``batch_size``...).

    Example:
        >>> callback = SearchEvalCallback(heldout_rows, BM25Engine.load("index/"), eval_steps=50)  # doctest: +SKIP
        >>> trainer = GRPOTrainer(..., callbacks=[callback])  # doctest: +SKIP
        >>> callback.history[-1][1]["f1"]  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: Any,
        engine: SearchEngine | Mapping[str, SearchEngine],
        *,
        eval_steps: int | None = None,
        at_start: bool = True,
        prefix: str = "heldout/",
        **evaluate_kwargs: Any,
    ) -> None:
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 or None (start and end only), got {eval_steps}.")
        self.engines = dict(engine) if isinstance(engine, Mapping) else {getattr(engine, "name", "engine"): engine}
        if not self.engines:
            raise ValueError("SearchEvalCallback needs an engine, or a non-empty mapping of them.")
        self.dataset, self.eval_steps, self.at_start = dataset, eval_steps, at_start
        self.prefix, self.evaluate_kwargs = prefix, {"progress": False, **evaluate_kwargs}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.engine_history: list[tuple[int, dict[str, dict[str, Any]]]] = []
        self._pending: dict[str, float] | None = None

    def _run(self, step: int, model: Any, tokenizer: Any) -> dict[str, float]:
        """Evaluate; return the scores as log keys."""
        result = evaluate(model, {"heldout": self.dataset}, self.engines, tokenizer=tokenizer, **self.evaluate_kwargs)
        by_engine = {name: block["overall"] for name, block in result.engines.items()}
        self.history.append((step, result.overall))
        self.engine_history.append((step, by_engine))
        first = next(iter(by_engine))
        return {
            f"{self.prefix}{'' if name == first else name + '/'}{metric}": overall[metric]
            for name, overall in by_engine.items()
            for metric in METRICS
            if overall.get(metric) is not None
        }

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.at_start and state.global_step == 0:
            self._run(0, model, kwargs.get("processing_class"))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        step = state.global_step
        due = step == state.max_steps or (self.eval_steps is not None and step % self.eval_steps == 0)
        if due and not (self.history and self.history[-1][0] == step):
            self._pending = self._run(step, model, kwargs.get("processing_class"))
            control.should_log = True  # the scores reach the logs at this very step
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self._pending or logs is None:
            return
        add_to_logs(state, logs, self._pending)
        self._pending = None

    def attach(self, trainer: Any) -> SearchEvalCallback:
        """Put this callback first among ``trainer``'s callbacks, so ``report_to`` integrations log its scores."""
        attach_first(trainer, self)
        return self
