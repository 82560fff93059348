"""Real web search through a search API: Serper (``google.serper.dev``) or SerpAPI (``serpapi.com``).

Each result's title and snippet become a document (``meta["id"]`` is its link). The API key comes from an
environment variable (``SERPER_API_KEY`` or ``SERPAPI_API_KEY`` by default); a missing key fails at construction
naming the variable, and the key never appears in a message or a log line. Failures are retried with back-off as in
:mod:`zerosearch_trl.engines.http_client`; the queries of a batch go out in parallel, one API call each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import urlsplit

from zerosearch_trl.engines.base import Document, SearchRequest, validate_top_k
from zerosearch_trl.engines.corpus import make_document, with_shortfall
from zerosearch_trl.engines.http_client import JSONClient, SearchServerError, excerpt, with_path

Provider = Literal["serper", "serpapi"]

# Per provider: default endpoint, default key variable, the answer's list of results.
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "serper": ("https://google.serper.dev/search", "SERPER_API_KEY", "organic"),
    "serpapi": ("https://serpapi.com/search.json", "SERPAPI_API_KEY", "organic_results"),
}


class WebSearchError(SearchServerError):
    """The search API is unreachable, refused the request (a bad key, no credit), or answered unexpectedly."""


class WebSearchEngine:
    """Web search results from Serper or SerpAPI as documents.

    Args:
        provider: ``"serper"`` or ``"serpapi"``.
        top_k: results per query.
        api_key_env: the environment variable holding the key (default: ``SERPER_API_KEY``/``SERPAPI_API_KEY``).
        base_url: the API endpoint (default: the provider's); a URL without a path gets the provider's path.
        timeout: seconds to wait for one answer.
        max_retries: extra attempts after a connection failure, a timeout or HTTP 408/429/5xx.
        backoff: seconds before the first retry, doubled at each further one.
        max_concurrency: API calls in flight for one batch.
        country: the ``gl`` country code sent to the API (``None``: the API's default).

    Example:
        >>> engine = WebSearchEngine("serper", top_k=3)  # doctest: +SKIP
        >>> engine.search([SearchRequest("Lyon country")])  # doctest: +SKIP

        Without the key, construction fails and names the variable:

        >>> WebSearchEngine("serpapi", api_key_env="MY_SERPAPI_KEY")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: WebSearchEngine('serpapi') needs an API key in the environment variable MY_SERPAPI_KEY; ...
    """

    name = "web"

    def __init__(
        self,
        provider: Provider = "serper",
        *,
        top_k: int = 5,
        api_key_env: str | None = None,
        base_url: str | None = None,
        timeout: float = 20.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_concurrency: int = 4,
        country: str | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}.")
        default_url, default_env, self._results_key = PROVIDERS[provider]
        self.api_key_env = api_key_env or default_env
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ValueError(
                f"WebSearchEngine({provider!r}) needs an API key in the environment variable {self.api_key_env}; "
                f"set it (export {self.api_key_env}=...) or name another one with api_key_env."
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}.")
        self.provider, self.top_k = provider, validate_top_k(top_k)
        self.url = default_url if base_url is None else _with_default_path(base_url, default_url)
        self.max_concurrency, self.country = max_concurrency, country
        self._key = key
        self._client = JSONClient(
            f"The {provider} search API at {self.url}",
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            secrets=[key],
            error=WebSearchError,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r}, top_k={self.top_k}, key from ${self.api_key_env})"

    @property
    def fingerprint(self) -> str:
        """Identifies the provider, endpoint, country and ``top_k`` (not the key), for cache keys."""
        return f"web|{self.provider}|{self.url}|gl={self.country}|k={self.top_k}"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """Up to ``top_k`` results per request, best first.

        Raises:
            WebSearchError: after the retries, or at once for a refused request (bad key) or an unexpected answer.
        """
        if len(requests) <= 1:
            return [self._search_one(r) for r in requests]
        with ThreadPoolExecutor(min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._search_one, requests))

    def _search_one(self, request: SearchRequest) -> list[Document]:
        if self.provider == "serper":
            body = {"q": request.query, "num": self.top_k, **({"gl": self.country} if self.country else {})}
            answer = self._client.call("POST", self.url, json=body, headers={"X-API-KEY": self._key})
        else:
            params = {"engine": "google", "q": request.query, "num": self.top_k, "api_key": self._key}
            answer = self._client.call(
                "GET", self.url, params={**params, **({"gl": self.country} if self.country else {})}
            )
        return self._documents(answer, request)

    def _documents(self, answer: Any, request: SearchRequest) -> list[Document]:
        if not isinstance(answer, dict):
            raise WebSearchError(f"The {self.provider} search API answered with {excerpt(str(answer))}, not an object.")
        if self.provider == "serpapi" and answer.get("error"):
            # SerpAPI reports "no results" as an error with HTTP 200; anything else is a real error.
            if "any results" not in str(answer["error"]):
                raise WebSearchError(f"The serpapi search API answered with an error: {excerpt(str(answer['error']))}")
        results = answer.get(self._results_key) or []
        if not isinstance(results, list):
            raise WebSearchError(
                f"The {self.provider} search API sent {self._results_key!r} that is not a list: {excerpt(str(results))}"
            )
        documents = [
            make_document(
                str(r.get("title") or ""), str(r["snippet"]), request, self.name, id=r.get("link"), score=None
            )
            for r in results[: self.top_k]
            if isinstance(r, dict) and r.get("snippet")  # a result without a snippet has nothing to read
        ]
        reason = f"the {self.provider} search API returned {len(documents)} results with text"
        return with_shortfall(documents, self.top_k, reason, request, self.name)


def _with_default_path(base_url: str, default_url: str) -> str:
    """``base_url`` as given, or with the default endpoint's path when it has none."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}.")
    return base_url if parts.path.strip("/") else with_path(base_url, urlsplit(default_url).path)
