"""Search engines behind one interface (see :mod:`zerosearch_trl.engines.base`)."""

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest, contains_answer
from zerosearch_trl.engines.cache import CachedSearchEngine, SearchCache
from zerosearch_trl.engines.simulated import SimulatedSearchEngine, SimulatorStats, parse_documents

__all__ = [
    "CachedSearchEngine",
    "Document",
    "SearchCache",
    "SearchEngine",
    "SearchRequest",
    "SimulatedSearchEngine",
    "SimulatorStats",
    "contains_answer",
    "parse_documents",
]
