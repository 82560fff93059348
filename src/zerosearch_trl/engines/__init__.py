"""Search engines behind one interface (see :mod:`zerosearch_trl.engines.base`)."""

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest, contains_answer
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.cache import CachedSearchEngine, SearchCache
from zerosearch_trl.engines.corpus import CorpusError, Passage, load_passages
from zerosearch_trl.engines.dense import DenseEngine, SentenceEncoder
from zerosearch_trl.engines.hybrid import HybridEngine, HybridStats
from zerosearch_trl.engines.remote import RemoteSearchEngine, RemoteSearchError
from zerosearch_trl.engines.simulated import SimulatedSearchEngine, SimulatorStats
from zerosearch_trl.engines.simulator_text import parse_documents
from zerosearch_trl.engines.web import WebSearchEngine, WebSearchError

__all__ = [
    "BM25Engine",
    "CachedSearchEngine",
    "CorpusError",
    "DenseEngine",
    "Document",
    "HybridEngine",
    "HybridStats",
    "Passage",
    "RemoteSearchEngine",
    "RemoteSearchError",
    "SearchCache",
    "SearchEngine",
    "SearchRequest",
    "SentenceEncoder",
    "SimulatedSearchEngine",
    "SimulatorStats",
    "WebSearchEngine",
    "WebSearchError",
    "contains_answer",
    "load_passages",
    "parse_documents",
]
