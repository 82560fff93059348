"""engines.factory: one settings-to-engine path for serve, eval and scripts (real BM25 index, real HTTP client)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from helpers import PASSAGE_ROWS
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.factory import EngineSettings, make_engine, make_engines, split_engine_settings


def test_bm25_over_a_corpus_file_saved_and_loaded_back(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in PASSAGE_ROWS))
    index = tmp_path / "index"
    built = make_engine(EngineSettings(engine="bm25", corpus=str(corpus), save_index=str(index), search_top_k=2))
    loaded = make_engine(EngineSettings(engine="bm25", corpus=str(index), search_top_k=2))
    request = [SearchRequest("imperial capital of Japan")]
    assert built.search(request)[0][0].title == loaded.search(request)[0][0].title == "Kyoto"


def test_several_engines_by_name_and_a_remote_client():
    engines = make_engines(
        EngineSettings(engine="bm25, remote", search_url="http://127.0.0.1:9/retrieve", search_top_k=3)
    )
    assert list(engines) == ["bm25", "remote"]
    assert engines["bm25"].top_k == engines["remote"].top_k == 3  # bm25 over the generated demo corpus


def test_server_timeout_and_retries_reach_every_client_that_calls_a_server():
    from zerosearch_trl.engines.factory import make_simulator

    settings = EngineSettings(
        engine="remote", search_url="http://127.0.0.1:9/retrieve", server_timeout=2.5, server_retries=1
    )
    remote = make_engine(settings)
    assert (remote._client.timeout, remote._client.max_retries) == (2.5, 1)
    simulator = make_simulator(replace(settings, engine="simulated", simulator_base_url="http://127.0.0.1:9/v1"))
    assert (simulator.client.timeout, simulator.client.max_retries) == (2.5, 1)
    default = make_engine(replace(settings, server_timeout=None, server_retries=None))
    assert (default._client.timeout, default._client.max_retries) == (30.0, 3)  # the client's own defaults


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (EngineSettings(engine="bm25,google"), "--engine must be one of"),
        (EngineSettings(engine="bm25,bm25"), "twice"),
        (EngineSettings(engine=" , "), "names no engine"),
        (EngineSettings(engine="remote"), "--search_url"),
        (EngineSettings(engine="web", web_provider="altavista"), "--web_provider"),
        (EngineSettings(engine="hybrid", real_engine="web"), "--real_engine"),
        (EngineSettings(engine="simulated", simulator_backend="openai"), "--simulator_base_url"),
        (EngineSettings(engine="simulated", noise_prob=1.5), "noise"),
        (EngineSettings(engine="bm25", corpus="/no/such/corpus.jsonl"), "does not exist"),
        (EngineSettings(engine="remote", search_url="http://x/retrieve", server_timeout=0), "--server_timeout .* 0"),
        (EngineSettings(engine="bm25", server_retries=-1), "--server_retries must be >= 0, got -1"),
    ],
)
def test_bad_settings_fail_before_anything_is_built(settings, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        split_engine_settings(settings)
