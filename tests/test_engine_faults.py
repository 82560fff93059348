"""Engine faults mid-rollout: a real ``serve`` (BM25 over a real index) behind a fault-injecting proxy on loopback,
searched by RemoteSearchEngine from a scripted policy's rollout. Each fault kind costs a logged, counted fallback
(the failure notice, ``search/engine_failures``), never the rollout, and every episode keeps its own rows."""

from __future__ import annotations

import pytest

from helpers import FaultProxy, make_tiny_model
from test_rollout import make_trainer, qa_dataset, scripted_generate
from zerosearch_trl.engines.base import SEARCH_FAILED_TEXT
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.remote import RemoteSearchEngine
from zerosearch_trl.engines.server import background_server
from zerosearch_trl.rollout import make_search_rollout

PASSAGES = [
    {"id": "alpha", "title": "Alpha", "text": "alpha place: the Alpha archive is kept in Paris."},
    {"id": "gamma1", "title": "Gamma one", "text": "gamma one: Gamma was founded by Nora Veld."},
    {"id": "gamma2", "title": "Gamma two", "text": "gamma two: Nora Veld lived in Tallinn."},
]
QUESTIONS = ["Where is Alpha?", "Where is Gamma?", "Where is Beta?"]  # one search, two searches, none


@pytest.fixture(scope="module")
def proxy():
    with background_server(BM25Engine.from_corpus(PASSAGES, top_k=1)) as url:
        fault_proxy = FaultProxy(url, slow_seconds=1.5)
        yield fault_proxy
        fault_proxy.close()


def play(tokenizer, proxy_url):
    engine = RemoteSearchEngine(proxy_url, top_k=1, timeout=0.5, max_retries=1, backoff=0.01)
    rollout = make_search_rollout(engine, max_turns=2)
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    dataset = qa_dataset(QUESTIONS)
    out = rollout(list(dataset["prompt"]), make_trainer(model, tokenizer, dataset, rollout, 400))
    return out, rollout.engine_failures, [tokenizer.decode(ids) for ids in out["completion_ids"]]


@pytest.mark.parametrize("mode", FaultProxy.MODES)
def test_each_fault_kind_is_a_counted_fallback_and_rows_stay_aligned(tokenizer, proxy, mode):
    proxy.mode = mode
    before = proxy.counts[mode]
    try:
        out, failures, texts = play(tokenizer, proxy.url)
    finally:
        proxy.mode = "pass"
    alpha, gamma, beta = texts
    assert out["search_queries"] == [["alpha place"], ["gamma one", "gamma two"], []]
    assert all(len(c) == len(m) for c, m in zip(out["completion_ids"], out["env_mask"]))
    assert "<information>" not in beta  # an episode that never searched is untouched
    if mode == "pass":
        assert failures == 0 and proxy.counts["pass"] > before
        assert "Alpha archive" in alpha and "Nora Veld" not in alpha  # each episode reads its own documents
        assert "Nora Veld" in gamma and "archive" not in gamma
        return
    assert proxy.counts[mode] > before  # the fault was really met
    assert failures == 3  # every search answered by the failure notice, counted
    assert alpha.count(SEARCH_FAILED_TEXT) == 1 and gamma.count(SEARCH_FAILED_TEXT) == 2
    assert "archive" not in alpha and "Nora Veld" not in gamma  # no document reached them


def test_a_server_that_comes_back_serves_the_next_searches(tokenizer, proxy):
    proxy.mode = "down"
    _, failures, _ = play(tokenizer, proxy.url)
    proxy.mode = "pass"
    _, failures_after, texts = play(tokenizer, proxy.url)
    assert failures == 3 and failures_after == 0 and "Alpha archive" in texts[0]
