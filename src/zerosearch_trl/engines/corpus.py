"""Passage corpora for the real engines: reading them, and the Search-R1 ``contents`` layout.

A corpus is a jsonl file (one JSON object a line) or a ``datasets.Dataset`` whose rows are ``{id, title, text}``,
or ``{id, contents}`` with ``contents = '"Title"\\ntext'`` as in FlashRAG and Search-R1 corpora. Bad input fails
early and names the line: a missing file, a line that is not JSON or lacks the text, an empty corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from zerosearch_trl.engines.base import Document, SearchRequest, contains_answer

NO_RESULTS_TEXT = "No results found for the query."
"""The text of the one document a real engine returns for a query that matches nothing."""


class CorpusError(ValueError):
    """A corpus that cannot be read: the message names the file and line (or the row) and the fix."""


@dataclass(frozen=True)
class Passage:
    """One corpus passage.

    Example:
        >>> Passage.from_row({"id": "7", "contents": '"Lyon"\\nLyon is a city in France.'})
        Passage(id='7', title='Lyon', text='Lyon is a city in France.')
    """

    id: str
    title: str
    text: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any], default_id: str = "") -> Passage:
        """Read ``{id, title, text}`` or ``{id, contents}``; ``default_id`` when the row has no ``id``.

        Raises:
            CorpusError: neither ``text`` nor ``contents`` is a string (the caller adds the line number).
        """
        passage_id = str(row["id"]) if row.get("id") is not None else default_id
        if isinstance(row.get("text"), str):
            return cls(passage_id, str(row.get("title") or ""), row["text"])
        if isinstance(row.get("contents"), str):
            return cls(passage_id, *split_contents(row["contents"]))
        raise CorpusError(
            f"a passage needs a 'text' (with an optional 'title') or a 'contents' string; got keys {sorted(row)}"
        )


def split_contents(contents: str) -> tuple[str, str]:
    """Split Search-R1 ``contents`` (``'"Title"\\ntext'``) into title and text; no newline means no title.

    Example:
        >>> split_contents('"Lyon"\\nLyon is a city.')
        ('Lyon', 'Lyon is a city.')
    """
    if "\n" not in contents:
        return "", contents.strip()
    title, text = contents.split("\n", 1)
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title.strip(), text.strip()


def join_contents(title: str, text: str) -> str:
    """The inverse of :func:`split_contents`.

    Example:
        >>> split_contents(join_contents("Lyon", "Lyon is a city."))
        ('Lyon', 'Lyon is a city.')
    """
    return f'"{title}"\n{text}'


def load_passages(corpus: str | Path | Iterable[Mapping[str, Any]], show_progress: bool = False) -> list[Passage]:
    """Read a corpus: a jsonl path, a ``datasets.Dataset`` or any iterable of row dicts.

    Rows without an ``id`` get their 0-based position. Blank lines are skipped.

    Raises:
        FileNotFoundError: the path does not exist.
        CorpusError: the path is a folder, a line is not a JSON object or has no text (the message names the line),
            or the corpus has no passage.

    Example:
        >>> [p.title for p in load_passages([{"title": "Lyon", "text": "A city."}, {"contents": "No title"}])]
        ['Lyon', '']
    """
    if isinstance(corpus, (str, Path)):
        passages = _read_jsonl(Path(corpus), show_progress)
        where = str(corpus)
    else:
        passages = []
        for i, row in enumerate(tqdm(corpus, desc="Reading passages", disable=not show_progress, unit=" rows")):
            try:
                passages.append(Passage.from_row(row, str(i)))
            except CorpusError as error:
                raise CorpusError(f"Corpus row {i}: {error}.") from None
        where = type(corpus).__name__
    if not passages:
        raise CorpusError(f"The corpus {where} has no passages: give at least one {{id, title, text}} row.")
    return passages


def _read_jsonl(path: Path, show_progress: bool) -> list[Passage]:
    if not path.exists():
        raise FileNotFoundError(f"Corpus file {path} does not exist (expected jsonl rows {{id, title, text}}).")
    if path.is_dir():
        raise CorpusError(f"Corpus path {path} is a folder; give a jsonl file of {{id, title, text}} rows.")
    passages = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(tqdm(f, desc=f"Reading {path.name}", disable=not show_progress), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
            try:
                passages.append(Passage.from_row(row, str(len(passages))))
            except CorpusError as error:
                raise CorpusError(f"{path}, line {number}: {error}.") from None
    return passages


def save_passages(passages: Sequence[Passage], path: str | Path) -> Path:
    """Write passages as jsonl ``{id, title, text}`` (what :func:`load_passages` reads back); return the path."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for p in passages:
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
    return path


INDEX_FORMAT = 1
"""Version of the saved-index layout that this release writes and reads (BM25 and dense alike)."""


def write_index_config(folder: Path, config_file: str, config: Mapping[str, Any]) -> None:
    """Write a saved index's JSON config (with :data:`INDEX_FORMAT`) into ``folder``."""
    (folder / config_file).write_text(json.dumps({"format": INDEX_FORMAT, **config}, indent=2) + "\n")


def read_index_config(folder: Path, config_file: str, kind: str, engine: str) -> dict[str, Any]:
    """Read a saved index's config; clear errors for a folder without one or of another format.

    Example:
        >>> read_index_config(Path("/nowhere"), "zerosearch_bm25.json", "BM25", "BM25Engine")
        Traceback (most recent call last):
        ...
        FileNotFoundError: /nowhere holds no BM25 index (no zerosearch_bm25.json); build one with BM25Engine.from_corpus(path).save(folder).
    """
    if not (folder / config_file).is_file():
        raise FileNotFoundError(
            f"{folder} holds no {kind} index (no {config_file}); build one with "
            f"{engine}.from_corpus(path).save(folder)."
        )
    config = json.loads((folder / config_file).read_text())
    if config.get("format") != INDEX_FORMAT:
        raise CorpusError(f"{folder}: index format {config.get('format')!r}, this version reads {INDEX_FORMAT}.")
    return config


def corpus_digest(passages: Sequence[Passage], *settings: Any) -> str:
    """A short hash of the passages and an index's settings, for cache keys and saved indexes."""
    h = hashlib.sha256(json.dumps(settings, default=str).encode())
    for p in passages:
        h.update(f"{p.id}\x00{p.title}\x00{p.text}\x01".encode())
    return h.hexdigest()[:16]


def make_document(title: str, text: str, request: SearchRequest, engine: str, **meta: Any) -> Document:
    """A real engine's result: ``meta`` holds ``engine``, ``label`` None, ``contains_answer`` and the given keys.

    Example:
        >>> make_document("Lyon", "Lyon is in France.", SearchRequest("lyon", golden_answers=("France",)), "bm25").meta
        {'engine': 'bm25', 'label': None, 'contains_answer': True}
    """
    document = Document(title, text, {"engine": engine, "label": None, **meta})
    document.meta["contains_answer"] = contains_answer(document, request.golden_answers)
    return document


def documents_from_hits(
    passages: Sequence[Passage], hits: Iterable[tuple[int, float]], request: SearchRequest, engine: str
) -> list[Document]:
    """Documents for ``(passage index, score)`` hits, best first, with ``id`` and ``score`` in their meta."""
    return [
        make_document(passages[i].title, passages[i].text, request, engine, id=passages[i].id, score=float(score))
        for i, score in hits
    ]


def with_shortfall(
    documents: list[Document], top_k: int, reason: str, request: SearchRequest, engine: str
) -> list[Document]:
    """Mark a short result: each document gets ``meta["shortfall"] = reason``; an empty one becomes one placeholder.

    A real engine returns what it found rather than filling up with arbitrary documents; the placeholder keeps an
    explicit notice in front of the policy when nothing matched.

    Example:
        >>> [(d.text, d.meta["shortfall"]) for d in with_shortfall([], 5, "nothing matched", SearchRequest("q"), "bm25")]
        [('No results found for the query.', 'nothing matched')]
    """
    if not documents:
        return [
            make_document("", NO_RESULTS_TEXT, request, engine, id=None, score=None, placeholder=True, shortfall=reason)
        ]
    if len(documents) < top_k:
        for document in documents:
            document.meta["shortfall"] = reason
    return documents
