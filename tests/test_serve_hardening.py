"""`serve` against hostile and malformed input, and its API key: every bad request gets a 4xx naming the problem,
never a 5xx or a traceback; a non-loopback bind needs a key (or an explicit, warned opt-out).

The fuzz targets run hypothesis with a fixed budget (``max_examples``) through FastAPI's TestClient (the real app,
middleware included, without sockets); the key is also checked over real HTTP on loopback.
"""

from __future__ import annotations

import json

import pytest
import requests
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerosearch_trl.commands.serve import ServeConfig, check_config
from zerosearch_trl.engines.access import SERVE_API_KEY_ENV, is_loopback
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.remote import RemoteSearchEngine, RemoteSearchError
from zerosearch_trl.engines.server import background_server, create_app

ROWS = [
    {"id": "lyon", "title": "Lyon", "text": "Lyon is the third largest city of France."},
    {"id": "kyoto", "title": "Kyoto", "text": "Kyoto was the imperial capital of Japan."},
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt."},
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def engine():
    return BM25Engine.from_corpus(ROWS, top_k=2)


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine, max_queries=64, max_query_chars=200, max_body_bytes=64 * 1024)) as client:
        yield client


def assert_clean_4xx(response, *statuses):
    """A refusal with a JSON ``detail`` that says what was wrong (no traceback, no 5xx)."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert detail and "Traceback" not in json.dumps(detail)


def test_limits_answer_413_and_name_the_limit(client):
    assert_clean_4xx(client.post("/retrieve", json={"queries": ["x"] * 65}), 413)
    assert "At most 64 queries" in client.post("/retrieve", json={"queries": ["x"] * 65}).text
    too_long = client.post("/retrieve", json={"queries": ["a" * 201]})
    assert_clean_4xx(too_long, 413)
    assert "at most 200 characters" in too_long.text
    huge = client.post("/retrieve", content=b'{"queries": ["' + b"a" * 70_000 + b'"]}',
                       headers={"content-type": "application/json"})  # fmt: skip
    assert_clean_4xx(huge, 413)
    assert "at most 65536" in huge.text
    assert client.post("/retrieve", json={"queries": ["Lyon"]}).status_code == 200


def test_a_body_without_a_declared_length_is_refused(client):
    def chunks():
        yield b'{"queries": ["Lyon"]}'

    response = client.post("/retrieve", content=chunks(), headers={"content-type": "application/json"})
    assert_clean_4xx(response, 411)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,  # nested past Python's recursion limit
        b'{"queries": ["\xff\xfe"]}',  # not UTF-8
        b"not json at all",
        b"",
        b'{"queries": "Lyon"}',
        b'{"queries": [1, 2]}',
        b'{"queries": ["a"], "topk": 0}',
        b'{"queries": ["a"], "topk": -1}',
        b'{"queries": ["a"], "topk": 1000000000}',
        b'{"queries": ["a"], "questions": [1]}',
        b'{"queries": ["a"], "golden_answers": "x"}',
        b'{"queries": null}',
    ],
)
def test_malformed_bodies_get_a_clean_4xx(client, body):
    response = client.post("/retrieve", content=body, headers={"content-type": "application/json"})
    assert_clean_4xx(response, 400, 413, 422)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
retrieve_like = st.fixed_dictionaries(
    {},
    optional={
        "queries": st.lists(st.text(max_size=250), max_size=70) | json_values,
        "topk": st.integers(-(10**12), 10**12) | json_values,
        "return_scores": st.booleans() | json_values,
        "questions": st.lists(st.none() | st.text(max_size=20), max_size=5) | json_values,
        "golden_answers": st.lists(st.lists(st.text(max_size=10), max_size=3), max_size=5) | json_values,
    },
)


@FUZZ
@given(body=retrieve_like)
def test_fuzzed_retrieve_bodies_never_get_a_5xx(client, body):
    response = client.post("/retrieve", json=body)
    if response.status_code == 200:
        result = response.json()["result"]
        assert isinstance(result, list) and len(result) == len(body["queries"])
    else:
        assert_clean_4xx(response, 400, 413, 422)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_fuzzed_raw_bytes_never_get_a_5xx(client, raw):
    response = client.post("/retrieve", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text[:300]


def test_the_api_key_is_required_and_compared(engine):
    with TestClient(create_app(engine, api_key="s3cret-key")) as client:
        body = {"queries": ["Lyon"]}
        assert_clean_4xx(client.post("/retrieve", json=body), 401)
        wrong = client.post("/retrieve", json=body, headers={"Authorization": "Bearer nope"})
        assert_clean_4xx(wrong, 401)
        assert wrong.headers["WWW-Authenticate"] == "Bearer" and "s3cret" not in wrong.text
        assert client.post("/retrieve", json=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.get("/health").status_code == 401  # a client's health check proves its key too
        assert client.get("/health", headers={"Authorization": "Bearer s3cret-key"}).json()["status"] == "ok"


def test_remote_engine_sends_the_key_from_the_environment_and_never_shows_it(engine, monkeypatch):
    with background_server(engine, api_key="s3cret-key") as url:
        monkeypatch.delenv(SERVE_API_KEY_ENV, raising=False)
        with pytest.raises(RemoteSearchError, match="HTTP 401") as refused:
            RemoteSearchEngine(url, top_k=2, max_retries=0).search([SearchRequest("Lyon")])
        assert "s3cret" not in str(refused.value)
        monkeypatch.setenv(SERVE_API_KEY_ENV, "s3cret-key")
        assert RemoteSearchEngine(url, top_k=2).search([SearchRequest("Lyon")])[0][0].title == "Lyon"
        plain = requests.post(f"{url}/retrieve", json={"queries": ["Lyon"]}, timeout=10)
        assert plain.status_code == 401


def test_a_non_loopback_bind_needs_a_key_or_an_explicit_opt_out(monkeypatch, caplog):
    monkeypatch.delenv(SERVE_API_KEY_ENV, raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    check_config(ServeConfig(host="127.0.0.1"))  # the default needs nothing
    with pytest.raises(
        ValueError, match=rf"--host 0.0.0.0 is reachable.*\${SERVE_API_KEY_ENV}.*--allow_unauthenticated"
    ):
        check_config(ServeConfig(host="0.0.0.0"))
    check_config(ServeConfig(host="0.0.0.0", allow_unauthenticated=True))
    monkeypatch.setenv(SERVE_API_KEY_ENV, "k")
    check_config(ServeConfig(host="0.0.0.0"))
    with pytest.raises(ValueError, match="--max_query_chars must be >= 1"):
        check_config(ServeConfig(max_query_chars=0))
    with pytest.raises(ValueError, match="Server limits must be integers >= 1"):
        create_app(BM25Engine.from_corpus(ROWS, top_k=1), max_body_bytes=0)
