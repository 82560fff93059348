"""Any search engine over HTTP with the Search-R1 ``/retrieve`` contract (what ``zerosearch-trl serve`` runs).

veRL/Search-R1 users point their retrieval URL at it (a simulator in place of their BM25 or dense server), and one
simulator on a GPU node can serve trainers on many (:class:`~zerosearch_trl.engines.remote.RemoteSearchEngine` is
the client). Built on FastAPI and uvicorn (``pip install zerosearch-trl[serve]``).

Endpoints:
    ``POST /retrieve``: ``{"queries": [...], "topk": k, "return_scores": true}`` gives
    ``{"result": [[{"document": {"id", "contents", "meta"}, "score": s}, ...] per query]}`` (without
    ``return_scores``, the documents themselves). Optional ``questions`` and ``golden_answers`` lists, aligned with
    ``queries``, reach the engine (a simulator writes useful documents with them). The queries of one request go to
    the engine in one batched call, run in a worker thread so the event loop keeps accepting requests; at most
    ``max_concurrency`` calls run at once, the others wait. An engine failure is answered with the failure-notice
    document for every query and a top-level ``error`` (HTTP 200, so a Search-R1 trainer goes on).

    ``GET /health``: ``{"status": "ok", "engine", "top_k", "max_concurrency", "in_flight"}``.

Limits, each with a documented default and a clear 4xx past it: ``max_queries`` per request (413),
``max_query_chars`` per query (413), ``max_body_bytes`` per body (413; a body without ``Content-Length`` gets 411),
a malformed body 422. With an ``api_key``, both endpoints want ``Authorization: Bearer <key>`` (401 otherwise,
compared in constant time: a client's health check also proves its key); ``zerosearch-trl serve`` reads the key from :data:`SERVE_API_KEY_ENV` and refuses to
bind anything but loopback without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

try:
    import uvicorn
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool
except ImportError as error:  # an optional extra: say how to get it
    raise ImportError("Serving needs FastAPI and uvicorn: pip install 'zerosearch-trl[serve]'.") from error

from zerosearch_trl.engines.access import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_QUEUED,
    RETRY_AFTER_SECONDS,
    SERVE_API_KEY_ENV,
)
from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest, search_documents
from zerosearch_trl.engines.corpus import join_contents


class RetrieveRequest(BaseModel):
    """The body of ``POST /retrieve``."""

    queries: list[str]
    topk: int | None = Field(default=None, ge=1)
    return_scores: bool = False
    questions: list[str | None] | None = None
    golden_answers: list[list[str]] | None = None


def create_app(
    engine: SearchEngine,
    *,
    max_concurrency: int = 8,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queued: int = DEFAULT_MAX_QUEUED,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI app serving ``engine`` (run it with uvicorn, or :func:`serve`).

    Args:
        engine: any search engine.
        max_concurrency: engine calls running at once; further requests wait their turn.
        max_queued: requests that may wait; beyond, HTTP 503 with ``Retry-After`` at once (never a hang).
        max_queries: the most queries one request may carry (HTTP 413 beyond).
        max_query_chars: the most characters in one query (HTTP 413 beyond).
        max_body_bytes: the largest request body (HTTP 413 beyond).
        api_key: when set, ``/retrieve`` and ``/health`` answer only requests with ``Authorization: Bearer
            <api_key>`` (401).

    Example:
        >>> from fastapi.testclient import TestClient
        >>> from zerosearch_trl.engines.bm25 import BM25Engine
        >>> engine = BM25Engine.from_corpus([{"id": "1", "title": "Lyon", "text": "Lyon is in France."}], top_k=1)
        >>> with TestClient(create_app(engine)) as client:
        ...     answer = client.post("/retrieve", json={"queries": ["Lyon"], "return_scores": True}).json()
        >>> answer["result"][0][0]["document"]["contents"]
        '"Lyon"\\nLyon is in France.'
    """
    limits = {"max_concurrency": max_concurrency, "max_queries": max_queries, "max_query_chars": max_query_chars,
              "max_body_bytes": max_body_bytes, "max_queued": max_queued}  # fmt: skip
    bad = {name: value for name, value in limits.items() if not isinstance(value, int) or value < 1}
    if bad:
        raise ValueError(f"Server limits must be integers >= 1, got {bad}.")

    def authorised(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(
                401,
                f"This server wants an API key: send 'Authorization: Bearer <key>' (RemoteSearchEngine sends "
                f"${SERVE_API_KEY_ENV} when it is set).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Made here, inside the server's event loop, which it would otherwise bind to on first contention.
        app.state.admission = _Admission(max_concurrency, max_queued)
        yield

    app = FastAPI(title=f"zerosearch-trl {engine.name} search", lifespan=lifespan)

    @app.get("/health", dependencies=[Depends(authorised)])
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "engine": engine.name,
            "top_k": engine.top_k,
            "max_concurrency": max_concurrency,
            "in_flight": app.state.admission.in_flight,
            "waiting": app.state.admission.waiting,
            "max_queued": max_queued,
        }

    app.add_middleware(_BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, error: RecursionError) -> JSONResponse:
        return JSONResponse({"detail": "The JSON body is nested too deeply: send the /retrieve contract."}, 422)

    @app.post("/retrieve", dependencies=[Depends(authorised)])
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        topk = body.topk or engine.top_k
        if topk > engine.top_k:
            raise HTTPException(
                400, f"This server returns at most {engine.top_k} documents per query (start it with --top_k {topk})."
            )
        if len(body.queries) > max_queries:
            raise HTTPException(413, f"At most {max_queries} queries per request, got {len(body.queries)}.")
        longest = max(map(len, body.queries), default=0)
        if longest > max_query_chars:
            raise HTTPException(
                413, f"A query holds at most {max_query_chars} characters, got one of {longest} (send a search query)."
            )
        requests = _requests(body)
        async with app.state.admission:
            results, failed = await run_in_threadpool(search_documents, engine, requests)
        answer: dict[str, Any] = {"result": [[_hit(d, body.return_scores) for d in docs[:topk]] for docs in results]}
        if failed:
            answer["error"] = f"the {engine.name} engine failed; see the server's log"
        return answer

    return app


class _Admission:
    """At most ``max_concurrency`` engine calls at once and ``max_queued`` requests waiting for one; a request past
    that is answered 503 with ``Retry-After`` at once. Made inside the server's event loop (its semaphore binds to
    the loop it first waits in)."""

    def __init__(self, max_concurrency: int, max_queued: int) -> None:
        self.max_concurrency, self.max_queued = max_concurrency, max_queued
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.in_flight = self.waiting = 0

    async def __aenter__(self) -> None:
        if self.waiting >= self.max_queued:
            raise HTTPException(
                503,
                f"Busy: {self.max_concurrency} engine calls running and {self.max_queued} requests waiting; retry "
                f"after {RETRY_AFTER_SECONDS} s (RemoteSearchEngine does), or start the server with a larger "
                "--max_queued.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:  # a client that went away while it waited leaves the queue too
            self.waiting -= 1
        self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        self.in_flight -= 1
        self.semaphore.release()


class _BodyLimit:
    """ASGI middleware: a POST body must declare its length (411) and stay within ``limit`` bytes (413), so that
    no request can make the server read without bound."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is None or not declared.isdigit():
                return await _reject(send, 411, "Send the body with a Content-Length header.")
            if int(declared) > self.limit:
                return await _reject(send, 413, f"The body is {int(declared)} bytes; this server takes at most "
                                                f"{self.limit} (split the queries over several requests).")  # fmt: skip
        await self.app(scope, receive, send)


async def _reject(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _requests(body: RetrieveRequest) -> list[SearchRequest]:
    n = len(body.queries)
    questions = body.questions if body.questions is not None else [None] * n
    answers = body.golden_answers if body.golden_answers is not None else [[]] * n
    if len(questions) != n or len(answers) != n:
        raise HTTPException(
            422, f"questions ({len(questions)}) and golden_answers ({len(answers)}) must align with queries ({n})."
        )
    return [SearchRequest(q, question, tuple(golds)) for q, question, golds in zip(body.queries, questions, answers)]


def _hit(document: Document, return_scores: bool) -> dict[str, Any]:
    """A document in Search-R1's shape, with the rest of its meta under ``meta``."""
    meta = {k: v for k, v in document.meta.items() if k not in ("id", "score")}
    payload = {"id": document.meta.get("id"), "contents": join_contents(document.title, document.text), "meta": meta}
    return {"document": payload, "score": document.meta.get("score")} if return_scores else payload


def serve(
    engine: SearchEngine, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **app_settings: Any
) -> None:
    """Serve ``engine`` until interrupted (what ``zerosearch-trl serve`` runs); ``app_settings`` go to
    :func:`create_app` (limits, ``api_key``).

    Example:
        >>> serve(BM25Engine.load("index/"), port=8000)  # doctest: +SKIP
    """
    uvicorn.run(create_app(engine, **app_settings), host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(
    engine: SearchEngine, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, **app_settings: Any
) -> Iterator[str]:
    """Serve ``engine`` from a thread of this process for the ``with`` block; yields the base URL.

    ``port=0`` takes a free port. For tests, notebooks and benchmarks; use :func:`serve` for a real service.

    Example:
        >>> from zerosearch_trl.engines.bm25 import BM25Engine
        >>> from zerosearch_trl.engines.remote import RemoteSearchEngine
        >>> engine = BM25Engine.from_corpus([{"title": "Lyon", "text": "Lyon is in France."}], top_k=1)
        >>> with background_server(engine) as url:
        ...     RemoteSearchEngine(url, top_k=1).search([SearchRequest("Lyon")])[0][0].title
        'Lyon'
    """
    config = uvicorn.Config(create_app(engine, **app_settings), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="zerosearch-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The search server did not start on {host}:{port} (port taken?).")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
