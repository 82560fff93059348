"""``zerosearch-trl serve``: any engine of :func:`~zerosearch_trl.make_engine` behind Search-R1's ``/retrieve`` API."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerosearch_trl.commands.parsing import command_parser
from zerosearch_trl.engines.access import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_QUEUED,
    SERVE_API_KEY_ENV,
    is_loopback,
)
from zerosearch_trl.engines.base import SearchEngine
from zerosearch_trl.engines.factory import EngineSettings, check_engine_settings
from zerosearch_trl.engines.factory import make_engine as build_engine

logger = logging.getLogger(__name__)

ENGINES = ("bm25", "dense", "simulated", "hybrid")
"""What ``serve`` serves (a web API or another server can be reached directly)."""


@dataclass
class ServeConfig:
    """Serve a search engine over HTTP with the Search-R1 ``/retrieve`` contract."""

    engine: str = field(
        default="bm25", metadata={"help": "'bm25', 'dense', 'simulated' or 'hybrid' (a real engine + the simulator)."}
    )
    corpus: str | None = field(
        default=None,
        metadata={"help": "Real engine's corpus: a jsonl file of {id, title, text} or a saved index (default: demo)."},
    )
    save_index: str | None = field(default=None, metadata={"help": "Save the index built from --corpus here."})
    real_engine: str = field(default="bm25", metadata={"help": "Hybrid: the real engine, 'bm25' or 'dense'."})
    dense_model: str | None = field(
        default=None, metadata={"help": "Dense encoder, hub id or folder (default: packaged all-MiniLM-L6-v2)."}
    )
    top_k: int = field(default=5, metadata={"help": "Most documents per query."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0 for all)."})
    port: int = field(default=8000, metadata={"help": "Port (Search-R1's retrieval server uses 8000)."})
    max_concurrency: int = field(default=8, metadata={"help": "Engine calls running at once; others wait."})
    max_queries: int = field(default=DEFAULT_MAX_QUERIES, metadata={"help": "Queries per request (413 beyond)."})
    max_query_chars: int = field(
        default=DEFAULT_MAX_QUERY_CHARS, metadata={"help": "Characters per query (413 beyond)."}
    )
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata={"help": "Body size (413 beyond)."})
    max_queued: int = field(
        default=DEFAULT_MAX_QUEUED, metadata={"help": "Requests waiting for an engine slot (503 + Retry-After beyond)."}
    )
    allow_unauthenticated: bool = field(
        default=False,
        metadata={
            "help": f"Bind a non-loopback --host without an API key (${SERVE_API_KEY_ENV}): anyone who reaches the "
            "port can use the engine. A warning says so."
        },
    )
    model: str = field(default="default", metadata={"help": "Simulator model for the transformers backend."})
    base_url: str | None = field(default=None, metadata={"help": "Simulator's OpenAI-compatible server URL."})
    backend: str | None = field(
        default=None, metadata={"help": "'transformers', 'openai' or 'vllm' (default: openai if --base_url)."}
    )
    prompt_format: str = field(
        default="prompt_only",
        metadata={"help": "'prompt_only', 'finetuned' or 'zerosearch' (the released simulators)."},
    )
    per_document: bool | None = field(
        default=None, metadata={"help": "One document per generation (default: on for the embedded model)."}
    )
    noise_prob: float = field(default=0.0, metadata={"help": "Share of requests the simulator answers noisy."})
    real_prob: float = field(default=0.5, metadata={"help": "Hybrid: share of requests the real engine answers."})
    seed: int = field(default=0, metadata={"help": "Seeds the simulator's and the hybrid's draws."})
    log_level: str = field(default="info", metadata={"help": "uvicorn log level."})


def engine_settings(config: ServeConfig) -> EngineSettings:
    """The :class:`~zerosearch_trl.engines.factory.EngineSettings` that ``config`` describes."""
    return EngineSettings(
        engine=config.engine,
        corpus=config.corpus,
        save_index=config.save_index,
        real_engine=config.real_engine,
        real_prob=config.real_prob,
        dense_model=config.dense_model,
        search_top_k=config.top_k,
        simulator_model=config.model,
        simulator_backend=config.backend,
        simulator_base_url=config.base_url,
        prompt_format=config.prompt_format,
        per_document=config.per_document,
        noise_prob=config.noise_prob,
        engine_seed=config.seed,
    )


def check_config(config: ServeConfig) -> None:
    """Raise a ValueError naming the first bad setting, before any index builds or model loads."""
    if config.engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {config.engine!r}.")
    for name in ("max_concurrency", "max_queries", "max_query_chars", "max_body_bytes", "max_queued"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(config, name)}.")
    if not is_loopback(config.host) and not os.environ.get(SERVE_API_KEY_ENV) and not config.allow_unauthenticated:
        raise ValueError(
            f"--host {config.host} is reachable from other machines: set an API key in ${SERVE_API_KEY_ENV} "
            "(clients send it as a bearer token; RemoteSearchEngine reads the same variable), or pass "
            "--allow_unauthenticated to serve anyone who reaches the port."
        )
    check_engine_settings(engine_settings(config))


def make_engine(config: ServeConfig) -> SearchEngine:
    """The engine that ``config`` describes (builds or loads the index, loads the simulator)."""
    check_config(config)
    return build_engine(engine_settings(config))


def main(argv: Sequence[str]) -> int:
    """``zerosearch-trl serve [--config recipe.yaml] [flags]``."""
    (config,) = command_parser("serve", [ServeConfig]).parse_args_and_config(list(argv))
    from zerosearch_trl.engines.server import serve  # FastAPI and uvicorn: the optional `serve` extra

    engine = make_engine(config)
    api_key = os.environ.get(SERVE_API_KEY_ENV) or None  # from the environment only: never a flag, never logged
    if api_key is None and not is_loopback(config.host):
        logger.warning("Serving %s WITHOUT an API key on %s: anyone who reaches the port can use it.", engine.name,
                       config.host)  # fmt: skip
    logger.info("Serving %s on http://%s:%d/retrieve%s", engine.name, config.host, config.port,
                " (API key required)" if api_key else "")  # fmt: skip
    serve(
        engine, host=config.host, port=config.port, log_level=config.log_level, api_key=api_key,
        max_concurrency=config.max_concurrency, max_queries=config.max_queries,
        max_query_chars=config.max_query_chars, max_body_bytes=config.max_body_bytes, max_queued=config.max_queued,
    )  # fmt: skip
    return 0
