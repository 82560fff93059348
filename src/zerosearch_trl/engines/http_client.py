"""JSON over HTTP with bounded retries and exponential back-off, for the engines that call a server.

Connection failures, timeouts and HTTP 408/429/5xx are retried; any other HTTP error, or an answer that is not JSON,
fails at once. Errors name the URL without its query string, and every secret (an API key) is masked in them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0
"""The longest a server's ``Retry-After`` may make a client wait before its next attempt (seconds)."""
_EXCERPT = 200  # characters of a bad answer quoted in an error


class SearchServerError(RuntimeError):
    """A search server is unreachable, refused the request, or answered outside its contract."""


def excerpt(text: str) -> str:
    """The start of ``text`` on one line, quoted, for error messages."""
    text = " ".join(text.split())
    return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


class JSONClient:
    """Calls one server; one ``requests.Session`` per thread, so calls from several threads reuse connections.

    Args:
        what: names the server in errors (``"The retrieval server at http://..."``).
        timeout: seconds to wait for one answer.
        max_retries: extra attempts after a retryable failure.
        backoff: seconds before the first retry, doubled at each further one.
        secrets: strings masked in every error and log message.
        error: the exception class raised (a :class:`SearchServerError`).
    """

    def __init__(
        self,
        what: str,
        *,
        timeout: float,
        max_retries: int,
        backoff: float,
        secrets: Sequence[str] = (),
        error: type[SearchServerError] = SearchServerError,
    ) -> None:
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(
                f"timeout must be > 0, max_retries and backoff >= 0; got {timeout}, {max_retries} and {backoff}."
            )
        self.what, self.timeout, self.max_retries, self.backoff = what, timeout, max_retries, backoff
        self._secrets, self._error = [s for s in secrets if s], error
        self._local = threading.local()
        if self._secrets:
            # urllib3 logs request lines at DEBUG, query string included (SerpAPI takes its key there).
            logging.getLogger("urllib3.connectionpool").addFilter(_MaskSecrets(self._secrets))

    def call(
        self,
        method: str,
        url: str,
        *,
        retry_answer: Callable[[Any], str | None] | None = None,
        hint: str = "",
        **kwargs: Any,
    ) -> Any:
        """The decoded JSON answer of ``method url`` (``kwargs`` go to ``requests``).

        Args:
            retry_answer: given the decoded answer, a reason to retry it (e.g. the server's engine failed), or None.
            hint: appended to the error raised once the retries are spent (what to check).

        Raises:
            SearchServerError: (``error``) after the retries, or at once for a refused request or an answer that is not JSON.
        """
        problem, asked = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                # A busy server's Retry-After is honoured, capped so one answer cannot stall a rollout.
                delay = max(self.backoff * 2 ** (attempt - 1), min(asked, MAX_RETRY_AFTER))
                logger.warning("%s: %s; retry %d in %.2f s", self.what, problem, attempt, delay)
                time.sleep(delay)
            try:
                response = self._session().request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as error:
                problem = self._mask(f"{type(error).__name__}: {error}")
                continue
            if response.status_code in RETRY_STATUS:
                problem = self._mask(f"HTTP {response.status_code} {excerpt(response.text)}")
                asked = retry_after(response.headers.get("Retry-After"))
                continue
            if response.status_code >= 400:
                raise self._error(
                    self._mask(f"{self.what} refused the request: HTTP {response.status_code} {excerpt(response.text)}")
                )
            try:
                answer = response.json()
            except ValueError:
                raise self._error(
                    self._mask(f"{self.what} answered with something other than JSON: {excerpt(response.text)}")
                ) from None
            reason = retry_answer(answer) if retry_answer is not None else None
            if reason is None:
                return answer
            problem = self._mask(reason)
        raise self._error(f"{self.what} failed {self.max_retries + 1} attempts; last: {problem}.{hint}")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _MaskSecrets(logging.Filter):
    """Masks secrets in the records of the logger it filters."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


def with_path(url: str, path: str) -> str:
    """``url`` with its path replaced (and its query dropped)."""
    return urlunsplit(urlsplit(url)._replace(path=path, query=""))


def retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks for (0 when absent, or given as an HTTP date: the back-off decides).

    Example:
        >>> retry_after("2"), retry_after(None), retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
        (2.0, 0.0, 0.0)
    """
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
