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
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool
except ImportError as error:  # an optional extra: say how to get it
    raise ImportError("Serving needs FastAPI and uvicorn: pip install 'zerosearch-trl[serve]'.") from error

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest, search_documents
from zerosearch_trl.engines.corpus import join_contents


class RetrieveRequest(BaseModel):
    """The body of ``POST /retrieve``."""

    queries: list[str]
    topk: int | None = Field(default=None, ge=1)
    return_scores: bool = False
    questions: list[str | None] | None = None
    golden_answers: list[list[str]] | None = None


def create_app(engine: SearchEngine, *, max_concurrency: int = 8, max_queries: int = 4096) -> FastAPI:
    """The FastAPI app serving ``engine`` (run it with uvicorn, or :func:`serve`).

    Args:
        engine: any search engine.
        max_concurrency: engine calls running at once; further requests wait their turn.
        max_queries: the most queries one request may carry (HTTP 413 beyond).

    Example:
        >>> from fastapi.testclient import TestClient
        >>> from zerosearch_trl.engines.bm25 import BM25Engine
        >>> engine = BM25Engine.from_corpus([{"id": "1", "title": "Lyon", "text": "Lyon is in France."}], top_k=1)
        >>> with TestClient(create_app(engine)) as client:
        ...     answer = client.post("/retrieve", json={"queries": ["Lyon"], "return_scores": True}).json()
        >>> answer["result"][0][0]["document"]["contents"]
        '"Lyon"\\nLyon is in France.'
    """
    if max_concurrency < 1 or max_queries < 1:
        raise ValueError(f"max_concurrency and max_queries must be >= 1, got {max_concurrency} and {max_queries}.")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Made here, inside the server's event loop, which it would otherwise bind to on first contention.
        app.state.semaphore = asyncio.Semaphore(max_concurrency)
        app.state.in_flight = 0
        yield

    app = FastAPI(title=f"zerosearch-trl {engine.name} search", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "engine": engine.name,
            "top_k": engine.top_k,
            "max_concurrency": max_concurrency,
            "in_flight": app.state.in_flight,
        }

    @app.post("/retrieve")
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        topk = body.topk or engine.top_k
        if topk > engine.top_k:
            raise HTTPException(
                400, f"This server returns at most {engine.top_k} documents per query (start it with --top_k {topk})."
            )
        if len(body.queries) > max_queries:
            raise HTTPException(413, f"At most {max_queries} queries per request, got {len(body.queries)}.")
        requests = _requests(body)
        async with app.state.semaphore:
            app.state.in_flight += 1
            try:
                results, failed = await run_in_threadpool(search_documents, engine, requests)
            finally:
                app.state.in_flight -= 1
        answer: dict[str, Any] = {"result": [[_hit(d, body.return_scores) for d in docs[:topk]] for docs in results]}
        if failed:
            answer["error"] = f"the {engine.name} engine failed; see the server's log"
        return answer

    return app


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
    engine: SearchEngine,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_concurrency: int = 8,
    log_level: str = "info",
) -> None:
    """Serve ``engine`` until interrupted (what ``zerosearch-trl serve`` runs).

    Example:
        >>> serve(BM25Engine.load("index/"), port=8000)  # doctest: +SKIP
    """
    uvicorn.run(create_app(engine, max_concurrency=max_concurrency), host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(
    engine: SearchEngine, *, host: str = "127.0.0.1", port: int = 0, max_concurrency: int = 8, timeout: float = 30.0
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
    config = uvicorn.Config(
        create_app(engine, max_concurrency=max_concurrency), host=host, port=port, log_level="warning"
    )
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
