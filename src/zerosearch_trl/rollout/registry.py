"""Which question and gold answers belong to a prompt: what each episode's searches carry to the engine.

TRL hands the rollout prompts only; the rows they came from are found by the prompt itself. A prompt that comes
again with other gold answers (NQ and HotpotQA share questions; a question may be in both the training and the
held-out set) gets them all, merged, so that the simulator never hears only the last row read.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zerosearch_trl.answers import as_gold_list

logger = logging.getLogger(__name__)


class GoldRegistry:
    """Prompt -> ``(question, gold answers)``, learnt from datasets with ``prompt``, ``question`` and
    ``golden_answers`` columns.

    Example:
        >>> import datasets
        >>> registry = GoldRegistry()
        >>> registry.register(datasets.Dataset.from_list([{"prompt": "Q?", "question": "Q?", "golden_answers": ["A"]}]))
        >>> registry.lookup("Q?"), registry.lookup("unknown")
        (('Q?', ('A',)), (None, ()))
    """

    def __init__(self) -> None:
        self._gold: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._registered: set[int] = set()
        self._conflicts: set[str] = set()

    @staticmethod
    def _key(prompt: Any) -> str:
        return json.dumps(prompt, sort_keys=True, ensure_ascii=False)

    def register(self, dataset: Any) -> None:
        """Learn the question and gold answers of every row of ``dataset`` (columns ``prompt``, ``question``,
        ``golden_answers``; a ``DatasetDict``'s splits too). A prompt that comes again with other gold answers gets
        them all (merged), with one warning naming it."""
        if dataset is None or id(dataset) in self._registered:
            return
        datasets = (
            dataset.values() if hasattr(dataset, "values") and not hasattr(dataset, "column_names") else [dataset]
        )
        conflicts: list[str] = []
        for part in datasets:
            columns = set(getattr(part, "column_names", []) or [])
            if not {"prompt", "question"} <= columns:
                continue
            golds = part["golden_answers"] if "golden_answers" in columns else [None] * len(part)
            for prompt, question, gold in zip(part["prompt"], part["question"], golds):
                key, answers = self._key(prompt), tuple(as_gold_list(gold))
                known = self._gold.get(key)
                if known is not None and known[1] != answers:
                    # One prompt, several gold lists (NQ and HotpotQA share questions; a question may be in both
                    # the training and the held-out set): the simulator hears them all, not the last one read.
                    answers = tuple(dict.fromkeys(known[1] + answers))
                    if key not in self._conflicts:
                        self._conflicts.add(key)
                        conflicts.append(question)
                self._gold[key] = (question, answers)
        self._registered.add(id(dataset))
        if conflicts:
            logger.warning(
                "%d prompt%s appear%s with different gold answers (first: %r): the simulator is told all of them, "
                "merged, while each row's reward still scores its own. Deduplicate the data to silence this.",
                len(conflicts),
                "" if len(conflicts) == 1 else "s",
                "s" if len(conflicts) == 1 else "",
                conflicts[0],
            )

    def lookup(self, prompt: Any) -> tuple[str | None, tuple[str, ...]]:
        """The question and gold answers registered for ``prompt`` (``(None, ())`` for an unknown one)."""
        return self._gold.get(self._key(prompt), (None, ()))
