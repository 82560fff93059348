"""QA datasets -> TRL prompt datasets.

``load_qa_dataset`` reads the layouts search-agent projects use and returns one shape: a ``datasets.Dataset``
with ``prompt`` (chat messages holding the instruction and the question), ``question``, ``golden_answers``
(list of strings), ``data_source`` and, when the source has one, ``id``.

Layouts:
- FlashRAG / Search-R1 evaluation files: ``question`` + ``golden_answers`` (or ``answer``), jsonl/json/parquet;
- veRL training rows: ``prompt`` (chat messages), ``reward_model.ground_truth``, ``extra_info.question``;
- any Hugging Face dataset id or local dataset folder with either layout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import datasets

from zerosearch_trl.answers import as_gold_list, normalize_answer
from zerosearch_trl.prompts import PromptStyle, build_policy_prompt

_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_EXPECTED = "'question' + 'golden_answers' (FlashRAG), or 'prompt' + 'reward_model' (veRL)"

logger = logging.getLogger(__name__)


class QADataError(ValueError):
    """A QA source that cannot be read or lacks the columns we need."""


def load_qa_dataset(
    source: str | os.PathLike | datasets.Dataset,
    split: str | None = None,
    *,
    prompt_style: PromptStyle = "zero_shot",
    data_source: str | None = None,
    limit: int | None = None,
) -> datasets.Dataset:
    """Load QA rows from a file, a dataset folder, a hub id or a ``Dataset`` into TRL prompt format.

    Args:
        source: ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a folder saved with ``save_to_disk``, a hub
            dataset id, or a ``datasets.Dataset``.
        split: split to take from a hub id or ``DatasetDict`` (default: ``"train"`` if present, else the only
            or first split).
        prompt_style: policy instruction: ``"zero_shot"`` (paper) or ``"one_shot"`` (for small models).
        data_source: name for the ``data_source`` column; default: the row's own, else the file's stem.
        limit: keep only the first ``limit`` rows.

    Returns:
        A dataset with columns ``prompt``, ``question``, ``golden_answers``, ``data_source`` (+ ``id``).

    Raises:
        FileNotFoundError: the path does not exist.
        QADataError: unreadable file, or neither known layout; the message names the file and the columns.

    Example:
        >>> import zerosearch_trl as zs
        >>> ds = zs.load_qa_dataset("nq.jsonl", prompt_style="one_shot")  # doctest: +SKIP
        >>> ds.column_names  # doctest: +SKIP
        ['prompt', 'question', 'golden_answers', 'data_source', 'id']
    """
    raw, name = _read(source, split)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    columns = set(raw.column_names)
    if "question" in columns and columns & {"golden_answers", "answer", "answers"}:
        convert = _flashrag_row
    elif "reward_model" in columns and ("prompt" in columns or "extra_info" in columns):
        convert = _verl_row
    else:
        raise QADataError(f"{name}: found columns {sorted(columns)}, expected {_EXPECTED}.")
    keep_id = "id" in columns

    def to_row(row: dict[str, Any], index: int) -> dict[str, Any]:
        question, golds = convert(row)
        if not question:
            raise QADataError(
                f"{name}: row {index} has no question (got {row.get('question', row.get('extra_info'))!r}): give "
                "each row its question as text, or drop the row."
            )
        out = {
            "prompt": build_policy_prompt(question, prompt_style),
            "question": question,
            "golden_answers": golds,
            "data_source": data_source or str(row.get("data_source") or name),
        }
        if keep_id:
            out["id"] = str(row["id"])
        return out

    # In memory and uncached: QA sets are small, and a stale on-disk cache would hide a change of prompt code.
    text = datasets.Value("string")
    features = datasets.Features(
        {
            "prompt": datasets.List({"role": text, "content": text}),
            "question": text,
            "golden_answers": datasets.List(text),
            "data_source": text,
            **({"id": text} if keep_id else {}),
        }
    )
    # The output's types are given: a column the rows reuse (``question``) would otherwise keep the file's type.
    rows = raw.map(
        to_row,
        features=features,
        with_indices=True,
        remove_columns=raw.column_names,
        keep_in_memory=True,
        load_from_cache_file=False,
        desc=f"Formatting {name}",
    )
    _warn_about_empty_golds(rows, name)
    return rows


def _warn_about_empty_golds(rows: datasets.Dataset, name: str) -> None:
    """One warning for the rows with a gold answer that normalises to nothing (it can never be matched)."""
    empty = [(i, g) for i, golds in enumerate(rows["golden_answers"]) for g in golds if not normalize_answer(g)]
    if not empty:
        return
    n_rows = len({i for i, _ in empty})
    first, gold = empty[0]
    logger.warning(
        "%s: %d of %d rows have a gold answer that normalises to nothing (first: row %d, %r, gold %r); such a "
        "gold matches no prediction, so a row with no other gold always scores 0: fix or drop those rows.",
        name,
        n_rows,
        len(rows),
        first,
        rows[first]["question"],
        gold,
    )


def _read(source: str | os.PathLike | datasets.Dataset, split: str | None) -> tuple[datasets.Dataset, str]:
    if isinstance(source, datasets.Dataset):
        return source, "dataset"
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, "dataset"), "dataset"
    path = Path(source)
    text = str(source)
    if path.suffix.lower() in _FILE_FORMATS:
        if not path.is_file():
            raise FileNotFoundError(f"QA file not found: {path}")
        if path.stat().st_size == 0:
            raise QADataError(f"{path}: the file is empty; it holds no rows (expected {_EXPECTED}).")
        try:
            loaded = datasets.load_dataset(_FILE_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
        except Exception as error:  # pyarrow/json raise many types; all mean "cannot parse this file"
            raise QADataError(f"{path}: cannot read it as {path.suffix} ({type(error).__name__}: {error}).") from error
        if len(loaded) == 0:
            raise QADataError(f"{path}: the file holds no rows.")
        return loaded, path.stem.replace(".sample", "").replace(".verl-format", "")
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            loaded = datasets.load_dataset(str(path))
        return _pick_split(loaded, split, path.name), path.name
    if path.exists() or text.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"QA source {text!r} is neither a supported file ({', '.join(_FILE_FORMATS)}) nor a dataset folder."
        )
    return _pick_split(datasets.load_dataset(text), split, text), text.rsplit("/", 1)[-1]


def _pick_split(loaded: datasets.Dataset | datasets.DatasetDict, split: str | None, name: str) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split is None:
        split = "train" if "train" in loaded else next(iter(loaded))
    if split not in loaded:
        raise QADataError(f"{name}: no split {split!r}; available: {sorted(loaded)}.")
    return loaded[split]


def _flashrag_row(row: dict[str, Any]) -> tuple[str, list[str]]:
    golds = row.get("golden_answers")
    if golds is None:
        golds = row.get("answer", row.get("answers"))
    return _text(row["question"]), as_gold_list(golds)


def _verl_row(row: dict[str, Any]) -> tuple[str, list[str]]:
    extra = row.get("extra_info") or {}
    question = extra.get("question")
    if not question:  # fall back to the last user message of the veRL prompt
        users = [m["content"] for m in row.get("prompt") or [] if m.get("role") == "user"]
        question = users[-1] if users else ""
    ground_truth = (row.get("reward_model") or {}).get("ground_truth")
    golds = as_gold_list(ground_truth) or as_gold_list(extra.get("answer"))
    return _text(question), golds


def _text(value: Any) -> str:
    """A question as text: a string stripped, a number written out; anything else (None, a list...) is no question."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""
