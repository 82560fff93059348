"""A client for retrieval servers with the Search-R1 ``/retrieve`` contract (``zerosearch-trl serve``, Search-R1's
``retrieval_server.py``, veRL search-tool servers).

The contract: POST ``{"queries": [...], "topk": k, "return_scores": true}``, answered by
``{"result": [[{"document": {"id": ..., "contents": "\\"Title\\"\\ntext"}, "score": s}, ...] per query]}``.
Two optional extensions, which other servers ignore: the request carries each query's ``questions`` and
``golden_answers`` (a simulator behind the server needs them to write useful documents), and ``zerosearch-trl serve``
adds each document's ``meta`` (its label, for one) and a top-level ``error`` when its engine failed.

Connection failures, timeouts, HTTP 429/5xx and an engine failure reported by the server are retried with
exponential back-off a bounded number of times; then, or at once for a refused request or an answer that does not
follow the contract, :class:`RemoteSearchError` says what went wrong. The rollout turns that into a failure notice
for the episode, so a server going down never crashes a training run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zerosearch_trl.engines.access import SERVE_API_KEY_ENV
from zerosearch_trl.engines.base import Document, SearchRequest, validate_top_k
from zerosearch_trl.engines.corpus import make_document, split_contents
from zerosearch_trl.engines.http_client import JSONClient, SearchServerError, excerpt, with_path


class RemoteSearchError(SearchServerError):
    """The retrieval server is unreachable, refused the request, or answered outside the contract."""


class RemoteSearchEngine:
    """Search through a retrieval server that speaks the Search-R1 ``/retrieve`` contract.

    Args:
        url: the endpoint, e.g. ``http://127.0.0.1:8000/retrieve``; a URL without a path gets ``/retrieve``.
        top_k: documents asked per query (``topk``).
        timeout: seconds to wait for one answer.
        max_retries: extra attempts after a connection failure, a timeout, HTTP 408/429/5xx or an engine failure
            reported by the server.
        backoff: seconds before the first retry, doubled at each further one.
        send_answers: send each request's question and gold answers along (the ``questions``/``golden_answers``
            extension); a simulator behind ``zerosearch-trl serve`` needs them for useful documents.
        api_key: bearer token for a server started with one (default: the ``ZEROSEARCH_SERVE_API_KEY``
            environment variable, if set); masked in every error.

    Example:
        >>> engine = RemoteSearchEngine("http://127.0.0.1:8000", top_k=3)
        >>> engine.url
        'http://127.0.0.1:8000/retrieve'
        >>> engine.search([SearchRequest("Lyon country")])  # doctest: +SKIP
    """

    name = "remote"

    def __init__(
        self,
        url: str,
        *,
        top_k: int = 5,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        send_answers: bool = True,
        api_key: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http(s) URL such as http://127.0.0.1:8000/retrieve, got {url!r}.")
        if parts.path in ("", "/"):
            parts = parts._replace(path="/retrieve")
        self.url = urlunsplit(parts)
        self.top_k = validate_top_k(top_k)
        self.send_answers = send_answers
        key = api_key if api_key is not None else os.environ.get(SERVE_API_KEY_ENV)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = JSONClient(
            f"The retrieval server at {self.url}",
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            secrets=[key] if key else [],
            error=RemoteSearchError,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, top_k={self.top_k})"

    @property
    def fingerprint(self) -> str:
        """Identifies the server and ``top_k``, for cache keys."""
        return f"remote|{self.url}|k={self.top_k}"

    def health(self) -> dict[str, Any]:
        """The server's ``GET /health`` answer (``zerosearch-trl serve`` has one; others may not).

        Raises:
            RemoteSearchError: the server is unreachable or has no health endpoint.
        """
        return self._client.call("GET", with_path(self.url, "/health"), headers=self._headers)

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """Up to ``top_k`` documents per request, from one POST for the whole batch.

        Raises:
            RemoteSearchError: after the retries, or at once for a refused request or a malformed answer.
        """
        if not requests:
            return []
        payload: dict[str, Any] = {"queries": [r.query for r in requests], "topk": self.top_k, "return_scores": True}
        if self.send_answers and any(r.question or r.golden_answers for r in requests):
            payload["questions"] = [r.question for r in requests]
            payload["golden_answers"] = [list(r.golden_answers) for r in requests]
        result = self._post(payload, len(requests))
        return [self._documents(hits, request) for hits, request in zip(result, requests)]

    def _post(self, payload: dict[str, Any], n_queries: int) -> list[Any]:
        """POST with bounded retries; return the validated ``result`` list."""

        def engine_failed(answer: Any) -> str | None:
            if isinstance(answer, dict) and answer.get("error"):
                return f"its engine failed ({excerpt(str(answer['error']))})"
            return None

        answer = self._client.call(
            "POST",
            self.url,
            json=payload,
            headers=self._headers,
            retry_answer=engine_failed,
            hint=" Is it running? Start one with: zerosearch-trl serve --engine bm25 --corpus passages.jsonl",
        )
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, list) or len(result) != n_queries or not all(isinstance(r, list) for r in result):
            raise RemoteSearchError(
                f"The retrieval server at {self.url} answered outside the /retrieve contract (expected "
                f'{{"result": [...]}} with one list of documents for each of {n_queries} queries): '
                f"{excerpt(str(answer))}"
            )
        return result

    def _documents(self, hits: list[Any], request: SearchRequest) -> list[Document]:
        return [self._document(hit, request) for hit in hits[: self.top_k]]

    def _document(self, hit: Any, request: SearchRequest) -> Document:
        """One hit: ``{"document": {...}, "score": s}`` (with scores) or the document itself (without)."""
        document, score = (
            (hit["document"], hit.get("score")) if isinstance(hit, dict) and "document" in hit else (hit, None)
        )
        if not isinstance(document, dict):
            raise RemoteSearchError(
                f"The retrieval server at {self.url} sent a document that is not an object: {excerpt(repr(hit))}"
            )
        if isinstance(document.get("contents"), str):
            title, text = split_contents(document["contents"])
        elif isinstance(document.get("text"), str):
            title, text = str(document.get("title") or ""), document["text"]
        else:
            raise RemoteSearchError(
                f"The retrieval server at {self.url} sent a document without 'contents' or 'text': {excerpt(repr(hit))}"
            )
        meta = dict(document["meta"]) if isinstance(document.get("meta"), dict) else {}
        engine = str(meta.pop("engine", self.name))
        for key in ("id", "score", "contains_answer"):  # set below from the hit and this request's gold answers
            meta.pop(key, None)
        return make_document(title, text, request, engine, **meta, id=document.get("id"), score=score)
