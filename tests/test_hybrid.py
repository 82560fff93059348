"""HybridEngine: a real BM25 index and a real simulated engine (scripted generator), mixed by a seeded draw."""

import pytest

from helpers import ScriptedGenerator
from zerosearch_trl.engines.base import SEARCH_FAILED_TEXT, Document, SearchRequest
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.hybrid import HybridEngine
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.environment import SimulatedSearchEnv
from zerosearch_trl.training.curriculum import CurriculumCallback

ROWS = [
    {"id": "lyon", "title": "Lyon", "text": "Lyon is the third largest city of France."},
    {"id": "kyoto", "title": "Kyoto", "text": "Kyoto was the imperial capital of Japan."},
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt."},
]


def simulator(top_k=2):
    def script(prompts):
        return [f"(Title: Simulated) A written result number {i}." for i in range(len(prompts))]

    return SimulatedSearchEngine(ScriptedGenerator(script), top_k=top_k, per_document=True, seed=0)


@pytest.fixture(scope="module")
def bm25():
    return BM25Engine.from_corpus(ROWS, top_k=2)


class Broken:
    name, top_k = "broken", 2

    def __init__(self, wrong_count=False):
        self.wrong_count, self.calls = wrong_count, 0

    def search(self, requests):
        self.calls += 1
        if self.wrong_count:
            return []
        raise ConnectionError("index server down")


def served_by(results):
    return [docs[0].meta["served_by"] for docs in results]


def test_mixing_ratio_over_many_requests_is_seeded(bm25):
    requests = [SearchRequest(f"city of France {i}", golden_answers=("France",)) for i in range(2000)]
    engine = HybridEngine(bm25, simulator(), real_prob=0.3, seed=1)
    results = engine.search(requests)
    share = served_by(results).count("bm25") / len(requests)
    assert 0.27 <= share <= 0.33 and engine.stats.real_fraction == share
    assert engine.stats.as_dict()["real"] + engine.stats.simulated == 2000 and engine.stats.fallbacks == 0
    for docs in results:  # each engine's own documents and labels
        if docs[0].meta["served_by"] == "bm25":
            assert docs[0].meta["id"] == "lyon" and docs[0].meta["label"] is None and docs[0].meta["contains_answer"]
        else:
            assert docs[0].title == "Simulated" and docs[0].meta["label"] in ("useful", "noisy")
    again = HybridEngine(bm25, simulator(), real_prob=0.3, seed=1).search(requests[:200])
    assert served_by(again) == served_by(results[:200])


def test_extremes_never_call_the_other_engine(bm25):
    never_real = Broken()
    results = HybridEngine(never_real, simulator(), real_prob=0.0, seed=0).search([SearchRequest("q")] * 20)
    assert never_real.calls == 0 and set(served_by(results)) == {"simulated"}
    only_real = HybridEngine(bm25, simulator(), real_prob=1.0, seed=0)
    assert set(served_by(only_real.search([SearchRequest("Nile Egypt")] * 20))) == {"bm25"}
    assert only_real.simulated.stats.requests == 0


@pytest.mark.parametrize("broken", [Broken(), Broken(wrong_count=True)], ids=["raises", "wrong_count"])
def test_the_simulator_serves_when_the_real_engine_fails(broken):
    engine = HybridEngine(broken, simulator(), real_prob=0.5, seed=3)
    requests = [SearchRequest(f"q{i}") for i in range(40)]
    results = engine.search(requests)
    assert broken.calls == 1  # one batched call for the real share
    assert set(served_by(results)) == {"simulated"} and all(len(docs) == 2 for docs in results)
    fell_back = [docs for docs in results if docs[0].meta.get("real_failed")]
    assert len(fell_back) == engine.stats.fallbacks == engine.stats.real > 0
    assert engine.stats.failures == 0


def test_without_fallback_a_failure_is_a_notice_not_a_crash():
    engine = HybridEngine(Broken(), simulator(), real_prob=1.0, fallback=False, seed=0)
    results = engine.search([SearchRequest("a"), SearchRequest("b")])
    assert [docs[0].text for docs in results] == [SEARCH_FAILED_TEXT] * 2
    assert all(docs[0].meta["real_failed"] and docs[0].meta["served_by"] == "broken" for docs in results)
    assert engine.stats.failures == 2


def test_the_curriculum_and_the_environment_reach_the_simulator(bm25):
    engine = HybridEngine(bm25, simulator(), real_prob=0.5, seed=0)
    callback = CurriculumCallback(engine, "linear")
    assert callback.target is engine
    engine.noise_prob = 0.75
    assert engine.simulated.noise_prob == 0.75
    env = SimulatedSearchEnv(engine)()
    env.reset(question="Which country is Lyon in?", golden_answers=["France"])
    assert env.search("largest city of France").startswith("Doc 1 (Title:")


def test_bad_settings():
    with pytest.raises(ValueError, match="same number of documents"):
        HybridEngine(BM25Engine.from_corpus(ROWS, top_k=3), simulator(top_k=2))
    with pytest.raises(ValueError, match="real_prob"):
        HybridEngine(Broken(), simulator(), real_prob=1.5)


def test_document_meta_survives_the_mix():
    class Tagged:
        name, top_k = "tagged", 2

        def search(self, requests):
            return [[Document("T", r.query, {"engine": "tagged", "id": r.query})] * 2 for r in requests]

    (docs,) = HybridEngine(Tagged(), simulator(), real_prob=1.0).search([SearchRequest("x")])
    assert docs[0].meta == {"engine": "tagged", "id": "x", "served_by": "tagged"}
