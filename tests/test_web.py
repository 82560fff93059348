"""WebSearchEngine against a loopback HTTP server that answers as Serper and SerpAPI do (their JSON shapes)."""

import json
import logging
import socket
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import JSONHandler, LoopbackServer
from zerosearch_trl.engines.base import SearchRequest, search_documents
from zerosearch_trl.engines.corpus import NO_RESULTS_TEXT
from zerosearch_trl.engines.web import WebSearchEngine, WebSearchError

KEY = "sk-test-5f2a9c"
RESULTS = {
    "lyon": [
        {
            "title": "Lyon - Wikipedia",
            "link": "https://en.wikipedia.org/wiki/Lyon",
            "snippet": "Lyon is a city in France.",
        },
        {"title": "Visit Lyon", "link": "https://visit.example/lyon", "snippet": "Things to do in Lyon."},
        {"title": "No snippet", "link": "https://example.org/empty"},
        {"title": "Lyon weather", "link": "https://weather.example/lyon", "snippet": "Lyon forecast."},
    ],
    "kyoto": [{"title": "Kyoto", "link": "https://en.wikipedia.org/wiki/Kyoto", "snippet": "Kyoto is in Japan."}],
}


class FakeSearchAPI(LoopbackServer):
    """Serper: POST /search, key in X-API-KEY, results under "organic". SerpAPI: GET /search.json?api_key=...,
    results under "organic_results", "no results" as an error with HTTP 200. ``failures`` 503s come first."""

    def __init__(self, failures=0):
        self.calls, self.failures = [], failures
        owner = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.calls.append(("POST", self.path, body, self.headers.get("X-API-KEY")))
                if self.headers.get("X-API-KEY") != KEY:
                    return self.answer(403, {"message": "Unauthorized.", "statusCode": 403})
                hits = RESULTS.get(body["q"].split()[0].lower(), [])[: body["num"]]
                self.answer(200, {"searchParameters": {"q": body["q"]}, "organic": hits, "answerBox": {"answer": "x"}})

            def do_GET(self):
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                owner.calls.append(("GET", urlsplit(self.path).path, query, query.get("api_key")))
                if query.get("api_key") != KEY:
                    return self.answer(401, {"error": "Invalid API key. Your API key should be here: ..."})
                hits = RESULTS.get(query["q"].split()[0].lower(), [])[: int(query["num"])]
                if not hits:
                    return self.answer(200, {"error": "Google hasn't returned any results for this query."})
                self.answer(200, {"search_metadata": {"status": "Success"}, "organic_results": hits})

            def answer(self, status, payload):
                if owner.failures:
                    owner.failures -= 1
                    status, payload = 503, {"error": "try again"}
                super().answer(status, payload)

        super().__init__(Handler)


@pytest.fixture
def api():
    server = FakeSearchAPI()
    yield server
    server.close()


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)


@pytest.mark.parametrize("provider", ["serper", "serpapi"])
def test_results_become_documents_in_order(api, keys, provider):
    engine = WebSearchEngine(provider, top_k=3, base_url=api.url)
    requests = [SearchRequest("Lyon country", golden_answers=["France"]), SearchRequest("kyoto"), SearchRequest("Lyon")]
    lyon, kyoto, lyon_again = engine.search(requests)
    assert [(d.title, d.meta["id"]) for d in lyon] == [
        ("Lyon - Wikipedia", "https://en.wikipedia.org/wiki/Lyon"),
        ("Visit Lyon", "https://visit.example/lyon"),
    ]  # 3 asked, the one without a snippet dropped
    assert lyon[0].text == "Lyon is a city in France." and lyon[0].meta["contains_answer"] is True
    assert (
        lyon[1].meta["contains_answer"] is False and lyon[0].meta["engine"] == "web" and lyon[0].meta["label"] is None
    )
    assert "returned 2 results" in lyon[0].meta["shortfall"]
    assert [d.title for d in kyoto] == ["Kyoto"] and kyoto[0].meta["contains_answer"] is None
    assert [d.title for d in lyon_again] == [d.title for d in lyon]
    method, path, sent, key = api.calls[0]
    assert (method, path, key) == (("POST", "/search", KEY) if provider == "serper" else ("GET", "/search.json", KEY))
    assert sent["q"] in {r.query for r in requests} and int(sent["num"]) == 3


@pytest.mark.parametrize("provider", ["serper", "serpapi"])
def test_no_results_is_a_placeholder(api, keys, provider):
    (documents,) = WebSearchEngine(provider, base_url=api.url).search([SearchRequest("zyzzyva")])
    assert [d.text for d in documents] == [NO_RESULTS_TEXT] and documents[0].meta["placeholder"]


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="environment variable SERPER_API_KEY"):
        WebSearchEngine("serper")
    monkeypatch.setenv("OTHER_KEY", "  ")
    with pytest.raises(ValueError, match="OTHER_KEY"):
        WebSearchEngine("serpapi", api_key_env="OTHER_KEY")
    with pytest.raises(ValueError, match="provider"):
        WebSearchEngine("bing")


@pytest.mark.parametrize("provider", ["serper", "serpapi"])
def test_the_key_never_shows_in_errors_or_logs(api, monkeypatch, caplog, provider):
    monkeypatch.setenv("WRONG_KEY", "sk-wrong-77")
    engine = WebSearchEngine(provider, base_url=api.url, api_key_env="WRONG_KEY", max_retries=0)
    assert "sk-wrong-77" not in repr(engine) + engine.fingerprint
    with caplog.at_level(logging.DEBUG), pytest.raises(WebSearchError, match=r"refused.*HTTP 40[13]") as refused:
        engine.search([SearchRequest("Lyon")])  # urllib3 logs the request line at DEBUG
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = WebSearchEngine(provider, base_url=down_url, api_key_env="WRONG_KEY", max_retries=1, backoff=0.01)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(WebSearchError, match="failed 2 attempts") as unreachable:
            down.search([SearchRequest("Lyon")])
        results, failed = search_documents(down, [SearchRequest("Lyon")])  # the rollout's path: logged, not raised
    assert failed and len(results) == 1
    for text in (str(refused.value), str(unreachable.value), caplog.text):
        assert "sk-wrong-77" not in text
    assert "***" in str(unreachable.value) or provider == "serper"  # SerpAPI's key travels in the URL: masked


def test_rate_limits_and_outages_are_retried(keys):
    api = FakeSearchAPI(failures=2)
    try:
        engine = WebSearchEngine("serper", base_url=api.url, max_retries=2, backoff=0.01)
        (documents,) = engine.search([SearchRequest("kyoto")])
        assert [d.title for d in documents] == ["Kyoto"] and len(api.calls) == 3
    finally:
        api.close()
