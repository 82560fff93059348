import subprocess
import sys
import threading

import pytest

from helpers import ScriptedGenerator
from zerosearch_trl.engines.base import Document, SearchRequest
from zerosearch_trl.engines.cache import CachedSearchEngine, SearchCache
from zerosearch_trl.engines.hybrid import HybridEngine
from zerosearch_trl.engines.simulated import SimulatedSearchEngine


class CountingEngine:
    """A deterministic engine that records how many requests reached it."""

    name, top_k = "counting", 2

    def __init__(self):
        self.seen = 0
        self.lock = threading.Lock()

    def search(self, requests):
        with self.lock:
            self.seen += len(requests)
        return [
            [Document(title=r.query, text=f"about {r.query} {i}", meta={"engine": "counting"}) for i in range(2)]
            for r in requests
        ]


def test_hits_misses_and_fresh_copies():
    engine = CachedSearchEngine(CountingEngine())
    first = engine.search([SearchRequest("a"), SearchRequest("b")])
    second = engine.search([SearchRequest("a"), SearchRequest("c")])
    assert engine.engine.seen == 3 and engine.cache.hits == 1 and engine.cache.misses == 3
    assert second[0][0].text == first[0][0].text
    second[0][0].meta["mutated"] = True  # callers may mutate what they get without poisoning the cache
    assert "mutated" not in engine.search([SearchRequest("a")])[0][0].meta


def test_key_includes_question_answers_mode_and_fingerprint():
    base = SearchCache.make_key("e1", SearchRequest("q"))
    assert base != SearchCache.make_key("e2", SearchRequest("q"))
    assert base != SearchCache.make_key("e1", SearchRequest("q", question="Q?"))
    assert base != SearchCache.make_key("e1", SearchRequest("q", golden_answers=["x"]))
    assert base != SearchCache.make_key("e1", SearchRequest("q"), mode="noisy")
    assert base == SearchCache.make_key("e1", SearchRequest("q"))


def test_lru_eviction():
    cache = SearchCache(max_entries=2)
    for key in "abc":
        cache.put(key, [Document("t", key)])
    assert cache.get("a") is None and cache.get("c")[0].text == "c" and len(cache) == 2


def test_threads_share_one_cache_safely():
    engine = CachedSearchEngine(CountingEngine())
    errors = []

    def worker(offset):
        try:
            for i in range(200):
                (docs,) = engine.search([SearchRequest(f"q{(i + offset) % 50}")])
                assert docs[0].title == f"q{(i + offset) % 50}"
        except Exception as error:  # collected and asserted below: an exception in a thread is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(engine.cache) == 50
    assert engine.cache.hits + engine.cache.misses == 1600


def test_sqlite_survives_a_process_restart(tmp_path):
    path = tmp_path / "cache.sqlite"
    writer = f"""
from zerosearch_trl.engines.base import Document, SearchRequest
from zerosearch_trl.engines.cache import SearchCache
cache = SearchCache(path={str(path)!r})
cache.put(SearchCache.make_key("bm25", SearchRequest("lyon")), [Document("Lyon", "A city in France.", {{"label": None}})])
cache.close()
"""
    subprocess.run([sys.executable, "-c", writer], check=True)
    cache = SearchCache(path=path)
    (document,) = cache.get(SearchCache.make_key("bm25", SearchRequest("lyon")))
    assert (document.title, document.text, document.meta) == ("Lyon", "A city in France.", {"label": None})
    assert cache.hits == 1 and len(cache) == 1


def test_fallback_results_are_not_cached():
    class Failing(CountingEngine):
        def search(self, requests):
            return [[Document("", "No further results.", {"fallback": True})] for _ in requests]

    engine = CachedSearchEngine(Failing())
    engine.search([SearchRequest("q")])
    engine.search([SearchRequest("q")])
    assert engine.cache.hits == 0


def test_wrapping_an_engine_that_draws_per_request_is_refused():
    simulated = SimulatedSearchEngine(ScriptedGenerator([]), top_k=2)
    with pytest.raises(ValueError, match="SimulatedSearchEngine\\(..., cache=SearchCache\\(\\)\\)"):
        CachedSearchEngine(simulated)
    with pytest.raises(ValueError, match="draw of HybridEngine .* HybridEngine\\(CachedSearchEngine\\(real\\)"):
        CachedSearchEngine(HybridEngine(CountingEngine(), simulated))
    # The documented way round: the real part cached inside the hybrid.
    hybrid = HybridEngine(CachedSearchEngine(CountingEngine()), simulated, real_prob=1.0)
    hybrid.search([SearchRequest("q")])
    hybrid.search([SearchRequest("q")])
    assert hybrid.real.cache.hits == 1
