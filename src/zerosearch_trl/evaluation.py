"""Evaluation: score a search agent on QA sets with any engine, greedy by default, every row.

:func:`evaluate` plays each question with the SAME multi-turn protocol as training (it drives
:meth:`~zerosearch_trl.rollout.SearchRollout.play`, the rollout's own loop), in batches, and scores every row,
the last partial batch included (the paper's code dropped it and sampled at temperature 1). Per dataset, per engine
and overall it reports exact match, cover EM, F1, searches per question, the share of questions answered, mean
turns; per row the prediction, the searches made and the documents seen. Given several engines, the same agent is
scored on each, side by side: the simulation-to-real gap.

The policy can be a model folder or hub id (a LoRA adapter folder too), a loaded model, or any generator with
``generate_ids`` (:class:`~zerosearch_trl.generation.vllm.VLLMGenerator`,
:class:`~zerosearch_trl.generation.openai.OpenAIGenerator` given a tokenizer, ...).

Example:
    >>> import zerosearch_trl as zs
    >>> result = zs.evaluate("runs/zerosearch", ["nq.jsonl"], zs.BM25Engine.load("index/"))  # doctest: +SKIP
    >>> result.overall["f1"]  # doctest: +SKIP
    0.31
    >>> zs.write_evaluation(result, "eval/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from zerosearch_trl.engines.base import SearchEngine
from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.prompts import THINK_PREFILL, PromptStyle
from zerosearch_trl.protocol import STOP_STRINGS
from zerosearch_trl.report import add_to_logs, attach_first
from zerosearch_trl.rewards import cover_exact_match, exact_match, extract_answer, f1_score

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
REPORT_FILE = "report.md"
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


def evaluate(
    model: Any = None,
    datasets: Any = (),
    engine: SearchEngine | Mapping[str, SearchEngine] | None = None,
    *,
    tokenizer: Any = None,
    max_turns: int = 2,
    prefill: str | None = THINK_PREFILL,
    prompt_style: PromptStyle = "zero_shot",
    max_completion_length: int = 512,
    batch_size: int = 16,
    temperature: float = 0.0,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Play and score every row of ``datasets`` with ``model`` searching ``engine``.

    Args:
        model: a folder or hub id (a LoRA adapter folder too; ``None``/``"default"``: the embedded model), a
            loaded ``PreTrainedModel``, or a generator with ``generate_ids`` (then ``tokenizer`` is needed).
        datasets: one QA source or several (files, dataset folders, hub ids, ``Dataset`` objects, read with
            :func:`~zerosearch_trl.load_qa_dataset`), or a mapping name -> source. A dataset is named by its
            ``data_source`` (the file name by default).
        engine: a search engine, or a mapping name -> engine to compare engines side by side.
        tokenizer: the policy's tokenizer (loaded with the model when ``model`` is a path).
        max_turns: search turns before the answer turn (paper: 2), as in training.
        prefill: text that opens the assistant turn, as in training.
        prompt_style: instruction of the rows loaded here (``"one_shot"`` for small models).
        max_completion_length: token budget per episode, observations included, as in training.
        batch_size: questions played together.
        temperature: 0 (default) decodes greedily; above 0 samples (seeded by ``seed``).
        limit: score only the first ``limit`` rows of each dataset.
        seed: seeds sampling when ``temperature > 0``.
        progress: show a progress bar.

    Returns:
        An :class:`EvaluationResult`; :func:`write_evaluation` saves it.

    Raises:
        ValueError: no dataset, no engine, a bad setting, or rows without gold answers; raised before any
            model loads.
        FileNotFoundError: a model folder or dataset file that does not exist.

    Example:
        >>> import zerosearch_trl as zs
        >>> task = zs.make_demo_task(n_questions=8)
        >>> engine = zs.BM25Engine.from_corpus(task.corpus, top_k=3)
        >>> result = evaluate("default", task.dataset, engine, prompt_style="one_shot")  # doctest: +SKIP
        >>> result.overall["n"], list(result.engines)  # doctest: +SKIP
        (8, ['bm25'])
    """
    from zerosearch_trl.rollout import SearchRollout

    if engine is None:
        raise ValueError("evaluate needs an engine, e.g. BM25Engine.from_corpus(...) or a SimulatedSearchEngine.")
    engines = dict(engine) if isinstance(engine, Mapping) else {getattr(engine, "name", "engine"): engine}
    if not engines:
        raise ValueError("evaluate got an empty mapping of engines.")
    if batch_size < 1 or max_completion_length < 2 or max_turns < 0:
        raise ValueError(
            f"Need batch_size >= 1, max_completion_length >= 2 and max_turns >= 0; got {batch_size}, "
            f"{max_completion_length} and {max_turns}."
        )
    if _is_local_path(model) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"Model folder {model} does not exist: give a model or LoRA adapter folder.")
    tables = load_eval_datasets(datasets, prompt_style=prompt_style, limit=limit)
    generate, tokenizer, eos_ids = _policy(model, tokenizer, batch_size)
    params = GenerationParams(
        max_new_tokens=max_completion_length,
        temperature=temperature,
        stop=tuple(STOP_STRINGS),
        seed=seed if temperature > 0 else None,
    )
    total = sum(len(t) for t in tables.values()) * len(engines)
    bar = _progress(total, progress)
    predictions: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for engine_name, search_engine in engines.items():
            per_dataset: dict[str, dict[str, Any]] = {}
            engine_rows: list[dict[str, Any]] = []
            for name, table in tables.items():
                rollout = SearchRollout(search_engine, max_turns=max_turns, prefill=prefill, datasets=[table])
                player = _Player(rollout, generate, params, tokenizer, max_completion_length, eos_ids)
                started = time.monotonic()
                rows: list[dict[str, Any]] = []
                for start in range(0, len(table), batch_size):
                    batch = table.select(range(start, min(start + batch_size, len(table))))
                    rows.extend(player.play_batch(batch))
                    bar.update(len(batch))
                for row in rows:
                    row.update(engine=engine_name, dataset=name)
                per_dataset[name] = summarize(rows, seconds=time.monotonic() - started)
                engine_rows.extend(rows)
            overall = summarize(engine_rows)
            overall["seconds_per_question"] = _weighted_seconds(per_dataset)
            summaries[engine_name] = {"datasets": per_dataset, "overall": overall}
            predictions.extend(engine_rows)
    finally:
        bar.close()
    config = {
        "model": str(model) if isinstance(model, (str, os.PathLike)) or model is None else type(model).__name__,
        "engines": list(engines),
        "datasets": {name: len(table) for name, table in tables.items()},
        "max_turns": max_turns,
        "prefill": prefill,
        "prompt_style": prompt_style,
        "max_completion_length": max_completion_length,
        "batch_size": batch_size,
        "temperature": temperature,
        "decoding": "greedy" if temperature == 0 else "sampled",
        "limit": limit,
    }
    return EvaluationResult(engines=summaries, predictions=predictions, config=config)


def load_eval_datasets(
    datasets: Any, *, prompt_style: PromptStyle = "zero_shot", limit: int | None = None
) -> dict[str, Any]:
    """QA sources -> ``{name: Dataset}`` in the rollout's row format, each row with gold answers and an ``id``.

    Raises:
        ValueError: no source, two sources with one name, or a row without gold answers (the message names the
            dataset and the row).
    """
    import datasets as hf_datasets

    from zerosearch_trl.data import load_qa_dataset

    if isinstance(datasets, (str, os.PathLike, hf_datasets.Dataset)):
        sources: list[tuple[str | None, Any]] = [(None, datasets)]
    elif isinstance(datasets, Mapping):
        sources = list(datasets.items())
    else:
        sources = [(None, source) for source in datasets]
    if not sources:
        raise ValueError("evaluate needs at least one QA dataset (a jsonl/parquet file, a folder or a hub id).")
    tables: dict[str, Any] = {}
    for name, source in sources:
        table = load_qa_dataset(source, prompt_style=prompt_style, data_source=name, limit=limit)
        names = sorted(set(table["data_source"]))
        label = name or (names[0] if len(names) == 1 else Path(str(source)).stem)
        if label in tables:
            raise ValueError(f"Two datasets are named {label!r}: pass a mapping {{name: source}} to tell them apart.")
        empty = [i for i, golds in enumerate(table["golden_answers"]) if not golds]
        if empty:
            raise ValueError(
                f"Dataset {label!r}: {len(empty)} rows have no gold answer (first: row {empty[0]}, "
                f"{table[empty[0]]['question']!r}); evaluation needs one per row: fix or drop them."
            )
        if "id" not in table.column_names:
            table = table.add_column("id", [f"{label}-{i}" for i in range(len(table))])
        tables[label] = table
    return tables


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


def write_evaluation(result: EvaluationResult, output_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
    """Write ``results.json``, ``predictions.jsonl``, ``report.md`` and (``plots=True``) ``scores.png``.

    Returns:
        The path of ``report.md``.

    Example:
        >>> import tempfile
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
                f"| {engine_name} | {name} | {scores['n']} | {_fmt(scores['exact_match'])} | "
                f"{_fmt(scores['cover_em'])} | {_fmt(scores['f1'])} | {_fmt(scores['mean_searches'])} | "
                f"{_fmt(scores['answered'])} | {_fmt(scores['mean_turns'])} | "
                f"{_fmt(scores.get('seconds_per_question'))} | {scores['errors']} |"
            )
    if plots and _plot_scores(result, out / "scores.png"):
        lines += ["", "![Scores per dataset and engine](scores.png)"]
    failed = [row for row in result.predictions if row.get("error")]
    if failed:
        lines += ["", f"{len(failed)} rows failed and were scored 0:", ""]
        lines += [f"- `{row['id']}` ({row['engine']}): {row['error']}" for row in failed[:20]]
    report = out / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    return report


@dataclass
class _Player:
    """Plays and scores batches of QA rows with one rollout, policy and budget."""

    rollout: Any
    generate: Any
    params: GenerationParams
    tokenizer: Any
    max_length: int
    eos_ids: set[int]

    def play_batch(self, batch: Any) -> list[dict[str, Any]]:
        """Play one batch; if it fails, replay its rows one by one so that a bad row costs only itself."""
        rows = list(batch)
        try:
            return self.play(rows)
        except Exception as error:  # a backend failure must not drop the batch's rows
            if len(rows) == 1:
                logger.warning("Row %s failed (%s: %s); scored 0.", rows[0].get("id"), type(error).__name__, error)
                return [_failed_row(rows[0], f"{type(error).__name__}: {error}")]
            logger.warning("A batch of %d failed (%s); replaying its rows one by one.", len(rows), type(error).__name__)
            return [row for one in range(len(rows)) for row in self.play_batch(batch.select([one]))]

    def play(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from zerosearch_trl.rollout import is_well_formed_episode

        episodes = [self.rollout.start_episode(row["prompt"], self.tokenizer) for row in rows]
        self.rollout.play(episodes, self.generate, self.params, self.tokenizer, self.max_length, eos_ids=self.eos_ids)
        scored = []
        for row, episode in zip(rows, episodes):
            text = self.tokenizer.decode(episode.completion_ids, skip_special_tokens=True)
            prediction = extract_answer(text)
            golds = list(row["golden_answers"])
            scored.append(
                {
                    **_row_identity(row),
                    "prediction": prediction,
                    "exact_match": exact_match(prediction, golds),
                    "cover_em": cover_exact_match(prediction, golds),
                    "f1": f1_score(prediction, golds),
                    "answered": float(prediction is not None),
                    "mean_searches": len(episode.search_queries),
                    "mean_turns": episode.turns,
                    "well_formed": float(is_well_formed_episode(episode, self.tokenizer)),
                    "searches": list(episode.search_queries),
                    "documents": [
                        [{"title": d.title, "text": d.text, **_doc_meta(d.meta)} for d in documents]
                        for documents in episode.documents
                    ],
                    "truncated": episode.truncated,
                    "completion": text,
                    "error": f"{episode.generation_errors} generation(s) failed" if episode.generation_errors else None,
                }
            )
        return scored


def _row_identity(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every scored row repeats from its QA row."""
    return {
        "id": row["id"],
        "data_source": row["data_source"],
        "question": row["question"],
        "golden_answers": list(row["golden_answers"]),
    }


def _failed_row(row: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {
        **_row_identity(row),
        "prediction": None,
        **dict.fromkeys(("exact_match", "cover_em", "f1", "answered", "well_formed"), 0.0),
        "mean_searches": 0,
        "mean_turns": 0,
        "searches": [],
        "documents": [],
        "truncated": False,
        "completion": "",
        "error": error,
    }


def _doc_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {key: meta[key] for key in ("label", "contains_answer", "id", "score") if meta.get(key) is not None}


def _policy(model: Any, tokenizer: Any, batch_size: int) -> tuple[Any, Any, set[int]]:
    """``(generate_ids, tokenizer, eos ids)`` for the policy, whatever form it was given in."""
    from zerosearch_trl.generation.transformers import TransformersGenerator, eos_token_ids

    if model is None or isinstance(model, (str, os.PathLike)):
        from zerosearch_trl.models import inference_device, load_model

        loaded, loaded_tokenizer = load_model(model, device_map=inference_device())
        loaded.eval()
        generator = TransformersGenerator(loaded, tokenizer or loaded_tokenizer, batch_size=batch_size)
        return generator.generate_ids, generator.tokenizer, eos_token_ids(loaded, generator.tokenizer)
    if tokenizer is None:
        raise ValueError("evaluate needs tokenizer= with a loaded model or a generator (the policy's tokenizer).")
    if hasattr(model, "generate_ids"):
        inner = getattr(model, "model", None)
        eos = eos_token_ids(inner, tokenizer) if hasattr(inner, "generation_config") else {tokenizer.eos_token_id}
        return model.generate_ids, tokenizer, eos
    if hasattr(model, "generate") and hasattr(model, "generation_config"):
        generator = TransformersGenerator(model, tokenizer, batch_size=batch_size)

        def generate(inputs: list[list[int]], params: GenerationParams) -> list[Generation]:
            was_training = model.training  # no dropout while evaluating, and the caller's mode back after
            model.eval()
            try:
                return generator.generate_ids(inputs, params)
            finally:
                model.train(was_training)

        return generate, tokenizer, eos_token_ids(model, tokenizer)
    raise TypeError(
        f"evaluate cannot generate with a {type(model).__name__}: give a model folder or hub id, a transformers "
        "model, or a generator with generate_ids (VLLMGenerator, OpenAIGenerator with a tokenizer)."
    )


def _is_local_path(model: Any) -> bool:
    """A path-like or a string that reads as a path (a hub id such as ``org/name`` does not)."""
    return isinstance(model, os.PathLike) or (isinstance(model, str) and model.startswith((".", "/", "~")))


def _weighted_seconds(per_dataset: Mapping[str, Mapping[str, Any]]) -> float | None:
    seconds = sum(s.get("seconds") or 0.0 for s in per_dataset.values())
    n = sum(s["n"] for s in per_dataset.values())
    return seconds / n if n else None


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Evaluating", unit="question", disable=not enabled)


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


class SearchEvalCallback(TrainerCallback):
    """Scores the policy on a held-out QA set during training, greedy, every row, with :func:`evaluate`.

    It runs at the start of training (``at_start``), every ``eval_steps`` optimisation steps and at the last step;
    each result joins the trainer's logs as ``heldout/<metric>`` (``heldout/f1``, ``heldout/exact_match``,
    ``heldout/mean_searches``...), so ``report_to`` integrations and ``metrics.jsonl`` see it, and
    :attr:`history` keeps ``(step, overall scores)`` of every run, the start included. The engine is the one you
    give: a real engine, or a simulator whose noise the curriculum does not move (TRL's own ``eval_dataset``
    evaluation samples, as training does; this one decodes greedily). Every process evaluates all rows.

    Args:
        dataset: held-out QA rows (anything :func:`evaluate` takes as one dataset).
        engine: the search engine to evaluate with.
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
        engine: SearchEngine,
        *,
        eval_steps: int | None = None,
        at_start: bool = True,
        prefix: str = "heldout/",
        **evaluate_kwargs: Any,
    ) -> None:
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 or None (start and end only), got {eval_steps}.")
        self.dataset, self.engine, self.eval_steps, self.at_start = dataset, engine, eval_steps, at_start
        self.prefix, self.evaluate_kwargs = prefix, {"progress": False, **evaluate_kwargs}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self._pending: dict[str, float] | None = None

    def _run(self, step: int, model: Any, tokenizer: Any) -> dict[str, Any]:
        result = evaluate(model, {"heldout": self.dataset}, self.engine, tokenizer=tokenizer, **self.evaluate_kwargs)
        self.history.append((step, result.overall))
        return result.overall

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.at_start and state.global_step == 0:
            self._run(0, model, kwargs.get("processing_class"))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        step = state.global_step
        due = step == state.max_steps or (self.eval_steps is not None and step % self.eval_steps == 0)
        if due and not (self.history and self.history[-1][0] == step):
            overall = self._run(step, model, kwargs.get("processing_class"))
            self._pending = {f"{self.prefix}{k}": overall[k] for k in METRICS if overall.get(k) is not None}
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


@dataclass
class EvalArguments:
    """``zerosearch-trl eval``: the agent and the QA sets (the engines come from
    :class:`~zerosearch_trl.engines.factory.EngineSettings`)."""

    datasets: str | None = field(
        default=None,
        metadata={"help": "Comma-separated QA sources: jsonl/parquet files, dataset folders or hub ids (required)."},
    )
    model: str = field(default="default", metadata={"help": "Policy: folder (or LoRA adapter folder) or hub id."})
    output_dir: str = field(default="eval", metadata={"help": "Where results.json, predictions.jsonl, report.md go."})
    limit: int | None = field(default=None, metadata={"help": "Score only the first N rows of each dataset."})
    batch_size: int = field(default=16, metadata={"help": "Questions played together."})
    max_turns: int = field(default=2, metadata={"help": "Searches before the answer turn (paper: 2)."})
    max_completion_length: int = field(default=512, metadata={"help": "Tokens per episode, observations included."})
    prompt_style: str | None = field(
        default=None, metadata={"help": "'zero_shot' or 'one_shot' (default: one_shot for the embedded model)."}
    )
    prefill: str = field(default=THINK_PREFILL, metadata={"help": "Opens the assistant turn ('' for none)."})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily (default); above 0 samples."})
    policy_backend: str = field(
        default="transformers", metadata={"help": "'transformers' (in process), 'vllm' or 'openai' (a server)."}
    )
    policy_base_url: str | None = field(
        default=None, metadata={"help": "The policy's OpenAI-compatible server (with --policy_backend openai)."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds sampling when --temperature > 0."})


POLICY_BACKENDS = ("transformers", "vllm", "openai")


def check_eval_args(args: EvalArguments) -> None:
    """Raise a clear error for a bad setting, before any model loads."""
    if not args.datasets or not [s for s in args.datasets.split(",") if s.strip()]:
        raise ValueError(
            "--datasets is required: comma-separated QA files, folders or hub ids, e.g. nq.jsonl,hotpotqa.jsonl."
        )
    if args.policy_backend not in POLICY_BACKENDS:
        raise ValueError(f"--policy_backend must be one of {', '.join(POLICY_BACKENDS)}, got {args.policy_backend!r}.")
    if args.policy_backend == "openai" and not args.policy_base_url:
        raise ValueError("--policy_backend openai needs --policy_base_url, e.g. http://localhost:8000/v1.")
    if args.prompt_style not in (None, "zero_shot", "one_shot"):
        raise ValueError(f"--prompt_style must be 'zero_shot' or 'one_shot', got {args.prompt_style!r}.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    if _is_local_path(args.model) and not Path(args.model).expanduser().exists():
        raise FileNotFoundError(f"--model {args.model} does not exist: give a model or LoRA adapter folder.")


def run_cli(argv: Sequence[str]) -> int:
    """``zerosearch-trl eval --datasets a.jsonl,b.parquet --engine simulated,bm25 [--corpus ...] [flags]``."""
    from zerosearch_trl.cli import command_parser
    from zerosearch_trl.engines.factory import EngineSettings, make_engine, split_engine_settings
    from zerosearch_trl.models import is_default_model

    args, settings = command_parser("eval", [EvalArguments, EngineSettings]).parse_args_and_config(list(argv))
    check_eval_args(args)
    engine_settings = split_engine_settings(settings)
    style = args.prompt_style or ("one_shot" if is_default_model(args.model) else "zero_shot")
    tables = load_eval_datasets([s.strip() for s in args.datasets.split(",") if s.strip()], prompt_style=style)
    engines = {one.engine: make_engine(one) for one in engine_settings}
    policy, tokenizer = _cli_policy(args)
    result = evaluate(
        policy,
        tables,
        engines,
        tokenizer=tokenizer,
        max_turns=args.max_turns,
        prefill=args.prefill or None,
        prompt_style=style,
        max_completion_length=args.max_completion_length,
        batch_size=args.batch_size,
        temperature=args.temperature,
        limit=args.limit,
        seed=args.seed,
    )
    result.config.update(model=args.model, engine_settings=vars(settings))
    report = write_evaluation(result, args.output_dir)
    for engine_name, block in result.engines.items():
        for name, scores in [*block["datasets"].items(), ("overall", block["overall"])]:
            print(
                f"{engine_name:>10} {name:<24} n={scores['n']:<5} EM={_fmt(scores['exact_match'])} "
                f"F1={_fmt(scores['f1'])} searches={_fmt(scores['mean_searches'])}"
            )
    print(f"Report: {report}")
    return 0


def _cli_policy(args: EvalArguments) -> tuple[Any, Any]:
    """The policy argument of :func:`evaluate` for the CLI's backend, and its tokenizer (``None``: loaded there)."""
    if args.policy_backend == "transformers":
        return args.model, None
    from zerosearch_trl.models import default_model_path, is_default_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    if args.policy_backend == "openai":
        from zerosearch_trl.generation.openai import OpenAIGenerator

        return OpenAIGenerator(args.policy_base_url, tokenizer=tokenizer), tokenizer
    from zerosearch_trl.generation.vllm import VLLMGenerator

    return VLLMGenerator(str(default_model_path()) if is_default_model(args.model) else args.model), tokenizer
