"""How good is a simulator? Useful results that hold the answer, noisy ones that leak it, format, diversity.

:func:`check_simulator` asks a simulator (prompt-only or fine-tuned) for a useful and a noisy result for each
held-out question, the question itself as the query, and measures:

- ``useful_answer_rate``: share of useful results with a gold answer in some document (higher is better);
- ``noisy_leak_rate``: share of noisy results with a gold answer in some document (lower is better);
- ``format_valid_rate``: share of results with ``top_k`` real documents (no placeholder) whose length is within
  a quarter and twice ``words_per_doc`` words;
- ``distinct_documents`` (unique document texts / documents) and ``distinct_bigrams`` (unique word bigrams /
  bigrams) over all results: diversity.

A simulator is worth training on when useful results carry the answer far more often than noisy ones leak it. The
engine built from a model runs with ``leak_guard="off"`` and no retries, so the numbers are the model's own.

Example:
    >>> import zerosearch_trl as zs
    >>> report = zs.check_simulator("simulator/merged", "heldout.jsonl", prompt_format="finetuned")  # doctest: +SKIP
    >>> report["useful_answer_rate"], report["noisy_leak_rate"]  # doctest: +SKIP
    (0.62, 0.08)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zerosearch_trl.engines.base import SearchRequest


def check_simulator(
    simulator: Any,
    questions: Any,
    *,
    top_k: int = 5,
    words_per_doc: int = 30,
    prompt_format: str = "prompt_only",
    per_document: bool | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a simulator on held-out questions (see the module docstring for the metrics).

    Args:
        simulator: a :class:`~zerosearch_trl.SimulatedSearchEngine` (used as configured), a text generator, or a
            model folder / hub id / ``"default"`` (loaded in process).
        questions: QA rows with gold answers (anything :func:`~zerosearch_trl.load_qa_dataset` reads).
        top_k, words_per_doc, prompt_format, per_document: the engine's settings when it is built here
            (``per_document`` defaults to on for the embedded model, as in training).
        limit: use only the first ``limit`` questions.
        seed: seeds the engine.

    Returns:
        The metrics, the counts behind them and a few sample results (JSON-ready).

    Example:
        >>> import datasets, zerosearch_trl as zs
        >>> class Leaky:  # a stand-in simulator whose every result, useful or noisy, holds the answer
        ...     name = "leaky"
        ...     def generate(self, prompts, params):  # it continues the "(Title:" prefill
        ...         return [zs.Generation(" Lyon) Lyon is a city in France.") for _ in prompts]
        >>> rows = datasets.Dataset.from_list([{"question": "Where is Lyon?", "golden_answers": ["France"]}])
        >>> check_simulator(Leaky(), rows, top_k=1)["noisy_leak_rate"]  # every noisy result leaks: not fit to train on
        1.0
    """
    from zerosearch_trl.data import load_qa_dataset
    from zerosearch_trl.engines.simulated import PLACEHOLDER_TEXT, SimulatedSearchEngine, default_per_document

    rows = load_qa_dataset(questions, limit=limit)
    if len(rows) == 0:
        raise ValueError("check_simulator needs at least one held-out question.")
    if isinstance(simulator, SimulatedSearchEngine):
        engine = simulator
    else:
        generator = simulator
        name = None
        if simulator is None or isinstance(simulator, (str, os.PathLike)):
            from zerosearch_trl.generation.factory import make_generator

            name = str(simulator or "default")
            generator = make_generator("transformers", model=name)
        if per_document is None:
            per_document = default_per_document("transformers", name, prompt_format)
        engine = SimulatedSearchEngine(
            generator,
            top_k=top_k,
            words_per_doc=words_per_doc,
            prompt_format=prompt_format,
            per_document=per_document,
            leak_guard="off",
            max_retries=0,
            seed=seed,
        )
    requests = [SearchRequest(q, q, tuple(g)) for q, g in zip(rows["question"], rows["golden_answers"])]
    n = len(requests)
    results = engine.search(requests + requests, modes=["useful"] * n + ["noisy"] * n)
    useful, noisy = results[:n], results[n:]

    def holds_answer(documents: list) -> bool:
        return any(d.meta.get("contains_answer") for d in documents)

    def valid(documents: list) -> bool:
        real = [d for d in documents if d.text != PLACEHOLDER_TEXT and not d.meta.get("placeholder")]
        lengths = [len(d.text.split()) for d in real]
        return len(real) == engine.top_k and all(
            engine.words_per_doc / 4 <= w <= 2 * engine.words_per_doc for w in lengths
        )

    texts = [d.text for documents in results for d in documents]
    bigrams = [tuple(words[i : i + 2]) for t in texts for words in [t.lower().split()] for i in range(len(words) - 1)]
    return {
        "questions": n,
        "top_k": engine.top_k,
        "prompt_format": engine.prompt_format,
        "useful_answer_rate": sum(map(holds_answer, useful)) / n,
        "noisy_leak_rate": sum(map(holds_answer, noisy)) / n,
        "format_valid_rate": sum(map(valid, results)) / (2 * n),
        "distinct_documents": len(set(texts)) / len(texts) if texts else 0.0,
        "distinct_bigrams": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "samples": [
            {
                "question": r.question,
                "golden_answers": list(r.golden_answers),
                "useful": [d.contents for d in u],
                "noisy": [d.contents for d in z],
            }
            for r, u, z in list(zip(requests, useful, noisy))[:3]
        ],
    }


def write_simulator_check(report: dict[str, Any], output_dir: str | os.PathLike[str]) -> Path:
    """Write ``simulator_check.json`` and ``simulator_check.md``; returns the markdown's path.

    Example:
        >>> import tempfile
        >>> rates = ("useful_answer_rate", "noisy_leak_rate", "format_valid_rate", "distinct_documents", "distinct_bigrams")
        >>> report = {"questions": 1, "top_k": 5, "prompt_format": "finetuned", "samples": [], **dict.fromkeys(rates, 0.5)}
        >>> write_simulator_check(report, tempfile.mkdtemp()).name
        'simulator_check.md'
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulator_check.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "# Simulator check",
        "",
        f"{report['questions']} held-out questions, {report['top_k']} documents per result, "
        f"prompt format `{report['prompt_format']}`.",
        "",
        "| metric | value | better |",
        "|---|---|---|",
        f"| useful results holding a gold answer | {report['useful_answer_rate']:.3f} | higher |",
        f"| noisy results leaking a gold answer | {report['noisy_leak_rate']:.3f} | lower |",
        f"| results in the expected format | {report['format_valid_rate']:.3f} | higher |",
        f"| distinct documents | {report['distinct_documents']:.3f} | higher |",
        f"| distinct word bigrams | {report['distinct_bigrams']:.3f} | higher |",
    ]
    for sample in report["samples"]:
        lines += ["", f"**{sample['question']}** (gold: {', '.join(sample['golden_answers'])})", "", "useful:"]
        lines += [f"- {text}" for text in sample["useful"]]
        lines += ["", "noisy:"] + [f"- {text}" for text in sample["noisy"]]
    path = out / "simulator_check.md"
    path.write_text("\n".join(lines) + "\n")
    return path
