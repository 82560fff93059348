"""Measurements that measure the policy (#20, item 5): the held-out yardstick is a real engine over the same facts;
the simulator, which is told the gold answers, is only a labelled second column."""

from __future__ import annotations

from helpers import ScriptedGenerator
from zerosearch_trl.demo import make_demo_task
from zerosearch_trl.engines.base import ENGINE_KINDS, SearchRequest, engine_kind
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.cache import CachedSearchEngine, SearchCache
from zerosearch_trl.engines.hybrid import HybridEngine
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.evaluation import evaluate, write_evaluation
from zerosearch_trl.training.config import EngineArguments
from zerosearch_trl.training.engines import SIMULATOR_TOLD_ANSWER, heldout_engines


def simulator():
    return SimulatedSearchEngine(ScriptedGenerator(lambda prompts: ["Doc 1 (Title: T) text."] * len(prompts)), top_k=2)


def test_the_demo_task_is_scored_against_bm25_over_its_own_corpus_first():
    task = make_demo_task(8)
    twin = simulator()
    engines = heldout_engines(simulator(), twin, task, EngineArguments(search_top_k=2))
    assert list(engines) == ["bm25", SIMULATOR_TOLD_ANSWER] and engines[SIMULATOR_TOLD_ANSWER] is twin
    bm25 = engines["bm25"]
    assert isinstance(bm25, BM25Engine) and bm25.top_k == 2
    person = task.corpus[len(task.corpus) - 1]["title"]  # the last passages are people's
    assert bm25.search([SearchRequest(person)])[0][0].title == person  # the same world the questions ask about


def test_a_hybrid_is_scored_against_its_real_part_and_a_real_engine_against_itself():
    real = BM25Engine.from_corpus([{"title": "Lyon", "text": "Lyon is in France."}] * 2, top_k=2)
    hybrid, twin = HybridEngine(real, simulator()), HybridEngine(real, simulator())
    engines = heldout_engines(hybrid, twin, None, EngineArguments(engine="hybrid", search_top_k=2))
    assert engines == {"bm25": real, SIMULATOR_TOLD_ANSWER: twin.simulated}
    assert heldout_engines(real, real, None, EngineArguments(engine="bm25")) == {"bm25": real}


def test_engine_kinds_see_through_a_cache():
    real = BM25Engine.from_corpus([{"title": "Lyon", "text": "Lyon is in France."}], top_k=1)
    assert engine_kind(real) == "real" and engine_kind(simulator()) == "simulated"
    assert engine_kind(CachedSearchEngine(real, SearchCache())) == "real"
    assert engine_kind(
        HybridEngine(real, SimulatedSearchEngine(ScriptedGenerator(lambda p: [""] * len(p)), top_k=1))
    ) == ("hybrid")


def test_the_evaluation_report_says_what_each_engine_measures(tokenizer, tmp_path):
    from helpers import PASSAGE_ROWS
    from test_evaluation import ScriptedPolicy, qa_rows

    engines = {"bm25": BM25Engine.from_corpus(PASSAGE_ROWS, top_k=2), "simulated": simulator()}
    result = evaluate(ScriptedPolicy(tokenizer), {"toy": qa_rows()}, engines, tokenizer=tokenizer, progress=False)
    assert result.config["engine_kinds"] == {"bm25": "real", "simulated": "simulated"}
    report = write_evaluation(result, tmp_path, plots=False).read_text()
    assert f"- `simulated`: {ENGINE_KINDS['simulated']}." in report and "upper bound" in report
    assert f"- `bm25`: {ENGINE_KINDS['real']}." in report
