"""BM25 over a passage corpus, on the ``bm25s`` package (sparse matrices, numpy only).

Build an index from a jsonl corpus or a ``datasets.Dataset`` (see :mod:`zerosearch_trl.engines.corpus`), save it to
a folder and load it back; search a batch of queries in one call. A query that matches no passage word gets one
placeholder document saying so, and one that matches fewer than ``top_k`` passages gets only those, each with the
reason in ``meta["shortfall"]``: a zero-score passage is an arbitrary one, not a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from zerosearch_trl.engines.base import Document, SearchRequest, validate_top_k
from zerosearch_trl.engines.corpus import (
    Passage,
    corpus_digest,
    documents_from_hits,
    load_passages,
    read_index_config,
    save_passages,
    with_shortfall,
    write_index_config,
)

CONFIG_FILE = "zerosearch_bm25.json"
PASSAGES_FILE = "passages.jsonl"
_AUTO_PROGRESS = 50_000  # passages from which a build shows progress bars by default


class BM25Engine:
    """Lexical search over a passage corpus.

    Build one with :meth:`from_corpus`, or :meth:`load` a saved index. Thread-safe for searching.

    Args:
        retriever: a ``bm25s.BM25`` indexed over ``passages`` (in order).
        passages: the corpus.
        top_k: documents per query.
        stopwords: the stopword list the index was tokenized with (``"en"``, or ``None`` for none).
        digest: identifies the corpus and settings, for cache keys (computed when not given).

    Example:
        >>> corpus = [
        ...     {"id": "1", "title": "Lyon", "text": "Lyon is a city in France on the Rhone."},
        ...     {"id": "2", "title": "Kyoto", "text": "Kyoto was the capital of Japan for a millennium."},
        ... ]
        >>> engine = BM25Engine.from_corpus(corpus, top_k=1)
        >>> (doc,), = engine.search([SearchRequest("capital of Japan", golden_answers=("Japan",))])
        >>> doc.title, doc.meta["id"], doc.meta["contains_answer"]
        ('Kyoto', '2', True)
    """

    name = "bm25"

    def __init__(
        self,
        retriever: bm25s.BM25,
        passages: Sequence[Passage],
        *,
        top_k: int = 5,
        stopwords: str | None = "en",
        digest: str | None = None,
    ) -> None:
        self.top_k = validate_top_k(top_k)
        if retriever.scores["num_docs"] != len(passages):
            raise ValueError(f"The index holds {retriever.scores['num_docs']} passages but {len(passages)} were given.")
        self.retriever, self.passages, self.stopwords = retriever, list(passages), stopwords
        self.digest = digest or corpus_digest(self.passages, retriever.k1, retriever.b, retriever.method, stopwords)

    @classmethod
    def from_corpus(
        cls,
        corpus: str | Path | Iterable[Mapping[str, Any]],
        *,
        top_k: int = 5,
        k1: float = 1.5,
        b: float = 0.75,
        stopwords: str | None = "en",
        show_progress: bool | None = None,
    ) -> BM25Engine:
        """Index a corpus: a jsonl path, a ``datasets.Dataset`` or an iterable of ``{id, title, text}`` rows.

        Args:
            corpus: the passages (``{id, contents}`` rows are read too).
            top_k: documents per query.
            k1: BM25 term-frequency saturation.
            b: BM25 length normalisation.
            stopwords: ``"en"`` (bm25s's English list) or ``None``.
            show_progress: progress bars while reading, tokenizing and indexing; by default on from 50k passages.

        Raises:
            FileNotFoundError: a missing corpus file.
            CorpusError: a malformed line (named) or an empty corpus.
        """
        validate_top_k(top_k)
        passages = load_passages(corpus, show_progress=bool(show_progress))
        show = len(passages) >= _AUTO_PROGRESS if show_progress is None else show_progress
        # The title is searchable too: many questions name the entity that a passage's title holds.
        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
        tokens = bm25s.tokenize(texts, stopwords=stopwords, show_progress=show)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(tokens, show_progress=show)
        return cls(retriever, passages, top_k=top_k, stopwords=stopwords)

    def save(self, folder: str | Path) -> Path:
        """Write the index, the passages and the settings into ``folder`` (created); return it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.retriever.save(folder, show_progress=False)
        save_passages(self.passages, folder / PASSAGES_FILE)
        config = {"stopwords": self.stopwords, "passages": len(self.passages), "digest": self.digest}
        write_index_config(folder, CONFIG_FILE, config)
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, top_k: int = 5, mmap: bool = False) -> BM25Engine:
        """Load an index written by :meth:`save`.

        Args:
            folder: the saved index.
            top_k: documents per query (not part of the index).
            mmap: memory-map the index arrays instead of reading them (for indexes larger than RAM).

        Raises:
            FileNotFoundError: ``folder`` holds no saved BM25 index.
        """
        folder = Path(folder)
        config = read_index_config(folder, CONFIG_FILE, "BM25", "BM25Engine")
        retriever = bm25s.BM25.load(folder, load_corpus=False, mmap=mmap, show_progress=False)
        passages = load_passages(folder / PASSAGES_FILE)
        return cls(retriever, passages, top_k=top_k, stopwords=config["stopwords"], digest=config["digest"])

    @staticmethod
    def is_index(folder: str | Path) -> bool:
        """Whether ``folder`` holds an index written by :meth:`save`."""
        return (Path(folder) / CONFIG_FILE).is_file()

    @property
    def fingerprint(self) -> str:
        """Identifies the corpus, the index settings and ``top_k``, for cache keys."""
        return f"bm25|{self.digest}|k={self.top_k}"

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """Return up to ``top_k`` passages per request, best first, in one batched retrieval.

        Each document's meta: ``engine``, ``id``, ``score``, ``label`` (None), ``contains_answer`` (None without
        gold answers), and ``shortfall`` when fewer than ``top_k`` passages match.
        """
        if not requests:
            return []
        tokens = bm25s.tokenize(
            [r.query for r in requests], stopwords=self.stopwords, return_ids=False, show_progress=False
        )
        k = min(self.top_k, len(self.passages))
        indices, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [self._documents(r, i, s) for r, i, s in zip(requests, indices, scores)]

    def _documents(self, request: SearchRequest, indices: np.ndarray, scores: np.ndarray) -> list[Document]:
        hits = [(int(i), float(s)) for i, s in zip(indices, scores) if s > 0]
        if not hits:
            reason = "no passage shares a word with the query"
        elif len(hits) == len(self.passages):
            reason = f"the corpus holds only {len(self.passages)} passages"
        else:
            reason = f"fewer passages match the query ({len(hits)}) than top_k ({self.top_k})"
        return with_shortfall(
            documents_from_hits(self.passages, hits, request, self.name), self.top_k, reason, request, self.name
        )
