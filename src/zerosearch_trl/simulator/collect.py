"""Simulator SFT data: a policy plays QA questions against a REAL engine; every (query, documents) pair is kept.

Labels as in the paper: pairs from episodes that reached a correct answer are ``useful``, the others ``noisy``;
``doc_label`` is the alternative, ``useful`` when a document contains a gold answer. Provenance (engine, model,
date) is kept on every row. :func:`~zerosearch_trl.simulator.sft.make_simulator_sft_dataset` turns the pairs into
SFT rows.

Example:
    >>> import zerosearch_trl as zs
    >>> pairs = zs.collect_simulator_data("default", ["nq.jsonl"], zs.BM25Engine.load("index/"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Literal

from zerosearch_trl.engines.base import SearchEngine

if TYPE_CHECKING:
    import datasets


Labelling = Literal["outcome", "contains_answer"]
LABEL_COLUMNS = {"outcome": "label", "contains_answer": "doc_label"}
"""Which column holds each labelling: the episode's outcome (the paper) or whether a document holds a gold answer."""


def collect_simulator_data(
    model: Any,
    datasets: Any,
    engine: SearchEngine,
    *,
    tokenizer: Any = None,
    correct: str = "exact_match",
    temperature: float = 0.0,
    **evaluate_kwargs: Any,
) -> datasets.Dataset:
    """Play QA questions against a real ``engine`` and keep every (query, documents) pair, labelled.

    Args:
        model: the policy that searches (anything :func:`~zerosearch_trl.evaluate` takes; the embedded model by
            default).
        datasets: QA sources with gold answers (as for :func:`~zerosearch_trl.evaluate`).
        engine: the real engine (BM25, dense, web, remote).
        tokenizer: the policy's tokenizer, when ``model`` is loaded or a generator.
        correct: the score that decides an episode's outcome: ``"exact_match"`` (the paper), ``"cover_em"`` or
            ``"f1"`` (correct when 1.0 / above 0.5).
        temperature: 0 decodes greedily; sampling (e.g. 1.0) gives more varied queries over repeated passes.
        **evaluate_kwargs: ``max_turns``, ``batch_size``, ``limit``, ``prompt_style``...

    Returns:
        A ``datasets.Dataset`` with ``query``, ``question``, ``golden_answers``, ``documents`` (``title``, ``text``,
        ``contains_answer``), ``label`` (outcome), ``doc_label`` (contains a gold answer), ``data_source``,
        ``engine``, ``model``, ``collected_at``.

    Raises:
        ValueError: the engine returned no document for any query (nothing to learn from), or a bad ``correct``.

    Example:
        >>> import zerosearch_trl as zs
        >>> task = zs.make_demo_task(n_questions=16)
        >>> engine = zs.BM25Engine.from_corpus(task.corpus, top_k=5)
        >>> pairs = collect_simulator_data("default", task.dataset, engine, prompt_style="one_shot")  # doctest: +SKIP
        >>> pairs.column_names[:5]  # doctest: +SKIP
        ['query', 'question', 'golden_answers', 'documents', 'label']
    """
    import datasets as hf_datasets

    from zerosearch_trl.evaluation import evaluate

    if correct not in ("exact_match", "cover_em", "f1"):
        raise ValueError(f"correct must be 'exact_match', 'cover_em' or 'f1', got {correct!r}.")
    result = evaluate(model, datasets, engine, tokenizer=tokenizer, temperature=temperature, **evaluate_kwargs)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    model_name = result.config["model"]
    rows = []
    threshold = 0.5 if correct == "f1" else 1.0
    for row in result.predictions:
        outcome = "useful" if (row[correct] or 0.0) >= threshold else "noisy"
        for query, documents in zip(row["searches"], row["documents"]):
            real = [d for d in documents if d.get("text", "").strip()]
            if not real:
                continue
            rows.append(
                {
                    "query": query,
                    "question": row["question"],
                    "golden_answers": list(row["golden_answers"]),
                    "documents": [
                        {"title": d["title"], "text": d["text"], "contains_answer": bool(d.get("contains_answer"))}
                        for d in real
                    ],
                    "label": outcome,
                    "doc_label": "useful" if any(d.get("contains_answer") for d in real) else "noisy",
                    "data_source": row["dataset"],
                    "engine": row["engine"],
                    "model": model_name,
                    "collected_at": when,
                }
            )
    if not rows:
        searched = sum(len(r["searches"]) for r in result.predictions)
        raise ValueError(
            f"No (query, documents) pair to learn from: the policy searched {searched} times over "
            f"{len(result.predictions)} questions and the {next(iter(result.engines))} engine returned no document "
            "text. Check the engine (its corpus or index) and that the policy searches (try the warm-started model)."
        )
    return hf_datasets.Dataset.from_list(rows)
