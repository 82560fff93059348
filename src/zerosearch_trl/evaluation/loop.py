"""Evaluation: score a search agent on QA sets with any engine, greedy by default, every row.

:func:`evaluate` plays each question with the SAME multi-turn protocol as training (it drives
:meth:`~zerosearch_trl.rollout.SearchRollout.play`, the rollout's own loop), in batches, and scores every row,
the last partial batch included (the paper's code dropped it and sampled at temperature 1). Per dataset, per engine
and overall it reports exact match, cover EM, F1, searches per question, the share of questions answered, mean
turns; per row the prediction, the searches made and the documents seen. Given several engines, the same agent is
scored on each, side by side: the simulation-to-real gap.

The policy can be a model folder or hub id (a LoRA adapter folder too), a loaded model, or any generator with
``generate_ids`` (:class:`~zerosearch_trl.generation.vllm.VLLMGenerator`,
:class:`~zerosearch_trl.generation.openai.OpenAIGenerator` given a tokenizer, ...). An in-process model and a
served one play each episode's turns on their own (continuous batching; a served policy's turns are concurrent
requests, :class:`~zerosearch_trl.generation.openai.OpenAITurns`); a vLLM generator plays them in batches.

Example:
    >>> import zerosearch_trl as zs
    >>> result = zs.evaluate("runs/zerosearch", ["nq.jsonl"], zs.BM25Engine.load("index/"))  # doctest: +SKIP
    >>> result.overall["f1"]  # doctest: +SKIP
    0.31
    >>> zs.write_evaluation(result, "eval/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerosearch_trl.answers import cover_exact_match, exact_match, f1_score
from zerosearch_trl.engines.base import SearchEngine, engine_kind
from zerosearch_trl.evaluation.result import EvaluationResult, summarize
from zerosearch_trl.generation.base import GenerationParams
from zerosearch_trl.models import resolve_prompt_settings
from zerosearch_trl.prompts import THINK_PREFILL, PromptStyle
from zerosearch_trl.protocol import STOP_STRINGS
from zerosearch_trl.rewards import extract_answer
from zerosearch_trl.rollout.episode import (
    DEFAULT_OBSERVATION_TOKENS,
    DEFAULT_TURN_TOKENS,
    check_turn_budgets,
    episode_budget,
)

logger = logging.getLogger(__name__)


def evaluate(
    model: Any = None,
    datasets: Any = (),
    engine: SearchEngine | Mapping[str, SearchEngine] | None = None,
    *,
    tokenizer: Any = None,
    max_turns: int = 2,
    prefill: str | None = THINK_PREFILL,
    prompt_style: PromptStyle | None = None,
    max_turn_tokens: int = DEFAULT_TURN_TOKENS,
    max_observation_tokens: int = DEFAULT_OBSERVATION_TOKENS,
    max_completion_length: int | None = None,
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
        prompt_style: instruction of the rows loaded here (``"one_shot"`` for small models); default: what the
            model was trained with (:class:`~zerosearch_trl.prompts.PromptSettings`), else one-shot for the
            embedded model and zero-shot for others.
        max_turn_tokens: model tokens per turn, as in training (paper: 500).
        max_observation_tokens: tokens per search result, as in training (paper: 500).
        max_completion_length: tokens per episode, observations included, as in training; default: what
            ``max_turns`` searches and the answer need (``rollout.episode.episode_budget``).
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
    if batch_size < 1 or max_turns < 0:
        raise ValueError(f"Need batch_size >= 1 and max_turns >= 0; got {batch_size} and {max_turns}.")
    check_turn_budgets(max_turn_tokens, max_observation_tokens)
    if max_completion_length is None:
        max_completion_length = episode_budget(max_turns, max_turn_tokens, max_observation_tokens)
    if is_local_path(model) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"Model folder {model} does not exist: give a model or LoRA adapter folder.")
    if prompt_style is None:
        prompt_style = resolve_prompt_settings(model, None, prefill or "").prompt_style
    tables = load_eval_datasets(datasets, prompt_style=prompt_style, limit=limit)
    generate, tokenizer, eos_ids, in_memory = _policy(model, tokenizer, batch_size)
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
                rollout = SearchRollout(
                    search_engine,
                    max_turns=max_turns,
                    max_turn_tokens=max_turn_tokens,
                    max_observation_tokens=max_observation_tokens,
                    prefill=prefill,
                    datasets=[table],
                )
                rollout.check_budget(max_completion_length)
                player = _Player(rollout, generate, params, tokenizer, max_completion_length, eos_ids, in_memory)
                started = time.monotonic()
                rows: list[dict[str, Any]] = []
                for start in range(0, len(table), batch_size):
                    batch = table.select(range(start, min(start + batch_size, len(table))))
                    rows.extend(player.play_batch(batch, start))
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
        if hasattr(generate, "close"):  # a served policy's request threads (OpenAITurns)
            generate.close()
    config = {
        "model": str(model) if isinstance(model, (str, os.PathLike)) or model is None else type(model).__name__,
        "engines": list(engines),
        "engine_kinds": {name: engine_kind(search_engine) for name, search_engine in engines.items()},
        "datasets": {name: len(table) for name, table in tables.items()},
        "max_turns": max_turns,
        "prefill": prefill,
        "prompt_style": prompt_style,
        "max_turn_tokens": max_turn_tokens,
        "max_observation_tokens": max_observation_tokens,
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


@dataclass
class _Player:
    """Plays and scores batches of QA rows with one rollout, policy and budget."""

    rollout: Any
    generate: Any
    params: GenerationParams
    tokenizer: Any
    max_length: int
    eos_ids: set[int]
    in_memory: Any = None  # the caller's model: in eval mode while it plays (no dropout), its own mode back after

    def play_batch(self, batch: Any, first: int) -> list[dict[str, Any]]:
        """Play one batch, whose first row is row ``first`` of its table; if it fails, replay its rows one by one so
        that a bad row costs only itself."""
        rows = list(batch)
        try:
            return self.play(rows, first)
        except Exception as error:  # a backend failure must not drop the batch's rows
            if len(rows) == 1:
                logger.warning("Row %s failed (%s: %s); scored 0.", rows[0].get("id"), type(error).__name__, error)
                return [_failed_row(rows[0], f"{type(error).__name__}: {error}")]
            logger.warning("A batch of %d failed (%s); replaying its rows one by one.", len(rows), type(error).__name__)
            return [row for one in range(len(rows)) for row in self.play_batch(batch.select([one]), first + one)]

    def play(self, rows: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
        from zerosearch_trl.rollout import is_well_formed_episode

        episodes = [self.rollout.start_episode(row["prompt"], self.tokenizer) for row in rows]
        was_training = getattr(self.in_memory, "training", False)
        if was_training:
            self.in_memory.eval()
        try:
            # Rows count across batches: a seeded sampling or a noisy engine draws for each row, not each slot.
            self.rollout.play(
                episodes, self.generate, self.params, self.tokenizer, self.max_length, eos_ids=self.eos_ids, first=first
            )
        finally:
            if was_training:
                self.in_memory.train()
        scored = []
        for row, episode in zip(rows, episodes):
            text = self.tokenizer.decode(episode.completion_ids, skip_special_tokens=True)
            prediction = extract_answer(episode.policy_turns)  # the policy's own text, never the observations
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
                    "well_formed": float(is_well_formed_episode(episode)),
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


def _policy(model: Any, tokenizer: Any, batch_size: int) -> tuple[Any, Any, set[int], Any]:
    """``(generate, tokenizer, eos ids, model to put in eval mode while playing)`` for the policy, whatever form it
    was given in. An in-process model plays on :func:`_in_process` (continuous batching where it can)."""
    from zerosearch_trl.generation.openai import OpenAIGenerator, OpenAITurns
    from zerosearch_trl.generation.transformers import eos_token_ids

    if model is None or isinstance(model, (str, os.PathLike)):
        from zerosearch_trl.models import inference_device, load_model

        loaded, loaded_tokenizer = load_model(model, device_map=inference_device())
        loaded.eval()
        tokenizer = tokenizer or loaded_tokenizer
        return _in_process(loaded, tokenizer, batch_size), tokenizer, eos_token_ids(loaded, tokenizer), None
    if tokenizer is None:
        raise ValueError("evaluate needs tokenizer= with a loaded model or a generator (the policy's tokenizer).")
    if isinstance(model, OpenAIGenerator):  # each episode's turn is its own request, as soon as it is ready
        return OpenAITurns(model), tokenizer, {tokenizer.eos_token_id}, None
    if hasattr(model, "generate_ids"):
        inner = getattr(model, "model", None)
        eos = eos_token_ids(inner, tokenizer) if hasattr(inner, "generation_config") else {tokenizer.eos_token_id}
        return model.generate_ids, tokenizer, eos, None
    if hasattr(model, "generate") and hasattr(model, "generation_config"):
        return _in_process(model, tokenizer, batch_size), tokenizer, eos_token_ids(model, tokenizer), model
    raise TypeError(
        f"evaluate cannot generate with a {type(model).__name__}: give a model folder or hub id, a transformers "
        "model, or a generator with generate_ids (VLLMGenerator, OpenAIGenerator with a tokenizer)."
    )


def _in_process(model: Any, tokenizer: Any, batch_size: int) -> Any:
    """The continuous-batching generator (``batch_size`` rows at most), or batched ``generate`` for a model whose
    cache it cannot manage."""
    from zerosearch_trl.generation.continuous import ContinuousTransformersGenerator, supports_continuous_batching
    from zerosearch_trl.generation.transformers import TransformersGenerator

    if supports_continuous_batching(model):
        return ContinuousTransformersGenerator(model, tokenizer, max_batch=batch_size)
    return TransformersGenerator(model, tokenizer, batch_size=batch_size).generate_ids


def is_local_path(model: Any) -> bool:
    """A path-like or a string that reads as a path (a hub id such as ``org/name`` does not)."""
    return isinstance(model, os.PathLike) or (isinstance(model, str) and model.startswith((".", "/", "~")))


def _weighted_seconds(per_dataset: Mapping[str, Mapping[str, Any]]) -> float | None:
    seconds = sum(s.get("seconds") or 0.0 for s in per_dataset.values())
    n = sum(s["n"] for s in per_dataset.values())
    return seconds / n if n else None


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Evaluating", unit="question", disable=not enabled)
