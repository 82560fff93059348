"""Who may use a served engine, and how much one request may ask: shared by ``serve``'s app, its command and the
client (:class:`~zerosearch_trl.engines.remote.RemoteSearchEngine`); no web framework needed to read them."""

from __future__ import annotations

import ipaddress

SERVE_API_KEY_ENV = "ZEROSEARCH_SERVE_API_KEY"
"""The environment variable that holds the API key of ``zerosearch-trl serve``: the server requires it, and
:class:`~zerosearch_trl.engines.remote.RemoteSearchEngine` sends it, as a bearer token. A key is read from the
environment only (a flag would show it in the process list and the shell history)."""

DEFAULT_MAX_QUERIES = 4096
"""Queries one ``/retrieve`` request may carry."""

DEFAULT_MAX_QUERY_CHARS = 2048
"""Characters one query may hold (a search query is a few words; this bounds what reaches a simulator's prompt)."""

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""Bytes one request body may hold (4 MiB: thousands of queries with their questions and gold answers)."""

DEFAULT_MAX_QUEUED = 64
"""Requests that may wait for an engine slot; one more is answered 503 with ``Retry-After`` at once (a client
backs off and retries) instead of joining a queue that only grows."""

RETRY_AFTER_SECONDS = 1
"""What a 503 from a full queue asks a client to wait."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` reaches only this machine (``127.0.0.0/8``, ``::1``, ``localhost``).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("10.1.2.3")
        (True, True, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
