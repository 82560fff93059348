"""Build any search engine from plain settings: one place for ``serve``, ``eval`` and scripts.

:class:`EngineSettings` is a dataclass (so TRL's ``TrlParser`` turns it into flags and YAML keys);
:func:`check_engine_settings` validates it without loading anything, and :func:`make_engine` builds the engine:
BM25 or dense over a corpus (a jsonl file, a saved index, or by default the package's generated demo corpus), the
simulator (in-process transformers, an OpenAI-compatible server or vLLM), a web search API, a remote ``/retrieve``
server, or a hybrid of a real engine and the simulator.

Example:
    >>> engine = make_engine(EngineSettings(engine="bm25", search_top_k=3))
    >>> engine.name, engine.top_k
    ('bm25', 3)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerosearch_trl.engines.base import SearchEngine, validate_top_k

if TYPE_CHECKING:
    from zerosearch_trl.engines.cache import SearchCache
    from zerosearch_trl.generation.base import TextGenerator

logger = logging.getLogger(__name__)

ENGINES = ("simulated", "bm25", "dense", "web", "remote", "hybrid")
REAL_ENGINES = ("bm25", "dense")
"""The engines a hybrid can mix with the simulator."""


@dataclass
class EngineSettings:
    """What :func:`make_engine` builds. Defaults: the paper's 5 documents, a prompt-only simulator.

    ``search_top_k`` is not ``top_k`` because TRL's ``GRPOConfig`` has a ``top_k`` (the policy's sampling filter) and
    ``zerosearch-trl train`` parses both into one set of flags.

    Example:
        >>> EngineSettings(engine="hybrid", real_engine="bm25", real_prob=0.3).real_prob
        0.3
    """

    engine: str = field(
        default="simulated",
        metadata={"help": f"One of {', '.join(ENGINES)}; eval takes several, comma-separated (simulated,bm25)."},
    )
    corpus: str | None = field(
        default=None,
        metadata={"help": "bm25/dense: a jsonl file of {id, title, text} or a saved index (default: the demo corpus)."},
    )
    save_index: str | None = field(default=None, metadata={"help": "Save the index built from --corpus here."})
    real_engine: str = field(default="bm25", metadata={"help": "hybrid: the real engine, 'bm25' or 'dense'."})
    real_prob: float = field(default=0.5, metadata={"help": "hybrid: share of requests the real engine answers."})
    dense_model: str | None = field(
        default=None, metadata={"help": "dense: encoder, hub id or folder (default: packaged all-MiniLM-L6-v2)."}
    )
    search_top_k: int = field(default=5, metadata={"help": "Documents per search (paper: 5)."})
    simulator_model: str = field(default="default", metadata={"help": "Simulator: hub id, folder or 'default'."})
    simulator_backend: str | None = field(
        default=None,
        metadata={"help": "Simulator: 'transformers', 'openai' or 'vllm' (default: openai with a base URL)."},
    )
    simulator_base_url: str | None = field(
        default=None, metadata={"help": "Simulator: OpenAI-compatible server URL (key: env OPENAI_API_KEY)."}
    )
    prompt_format: str = field(
        default="prompt_only",
        metadata={
            "help": "Simulator: 'prompt_only', 'finetuned' (an SFT simulator) or 'zerosearch' (the released "
            "ZeroSearch simulators' exact input)."
        },
    )
    per_document: bool | None = field(
        default=None, metadata={"help": "Simulator: one document per generation (default: on for the embedded model)."}
    )
    noise_prob: float = field(default=0.0, metadata={"help": "Simulator: share of requests answered noisy."})
    words_per_doc: int = field(default=30, metadata={"help": "Simulator: words per document (paper: 30)."})
    simulator_temperature: float = field(default=0.8, metadata={"help": "Simulator: sampling temperature."})
    simulator_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Simulator: token budget per generation (default: the engine's)."}
    )
    simulator_batch_size: int = field(default=64, metadata={"help": "Simulator: prompts per in-process call."})
    leak_guard: str = field(
        default="regenerate", metadata={"help": "Simulator: noisy documents stating the answer: regenerate/redact/off."}
    )
    cache_path: str | None = field(
        default=None,
        metadata={
            "help": "SQLite file caching results across runs (simulator: per useful/noisy mode; real: per query)."
        },
    )
    search_url: str | None = field(
        default=None,
        metadata={
            "help": "remote: the /retrieve URL of a Search-R1-style retrieval server; web: the search API's endpoint "
            "instead of the provider's (a proxy)."
        },
    )
    web_provider: str = field(default="serper", metadata={"help": "web: the search API (key from its env variable)."})
    server_timeout: float | None = field(
        default=None,
        metadata={
            "help": "remote, web and a served simulator: seconds to wait for one answer before retrying (default: "
            "each client's own: 30 remote, 20 web, 120 simulator)."
        },
    )
    server_retries: int | None = field(
        default=None,
        metadata={
            "help": "remote, web and a served simulator: retries after a failed call, with back-off, before the "
            "search is answered by the failure fallback (default: 3)."
        },
    )
    engine_seed: int = field(default=0, metadata={"help": "Seeds the simulator's and the hybrid's draws."})


def check_engine_settings(settings: EngineSettings) -> None:
    """Raise a ValueError (or FileNotFoundError) naming the first bad setting; nothing is built or loaded."""
    if settings.engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {settings.engine!r}.")
    validate_top_k(settings.search_top_k)
    if settings.real_engine not in REAL_ENGINES:
        raise ValueError(f"--real_engine must be one of {', '.join(REAL_ENGINES)}, got {settings.real_engine!r}.")
    if not 0.0 <= settings.real_prob <= 1.0:
        raise ValueError(f"--real_prob must be in [0, 1], got {settings.real_prob}.")
    if settings.corpus is not None and not Path(settings.corpus).exists():
        raise FileNotFoundError(f"--corpus {settings.corpus} does not exist: give a jsonl corpus or a saved index.")
    if settings.server_timeout is not None and not settings.server_timeout > 0:
        raise ValueError(f"--server_timeout must be > 0 seconds, got {settings.server_timeout}.")
    if settings.server_retries is not None and settings.server_retries < 0:
        raise ValueError(f"--server_retries must be >= 0, got {settings.server_retries}.")
    if settings.engine == "remote" and not settings.search_url:
        raise ValueError("--engine remote needs --search_url, e.g. http://127.0.0.1:8000/retrieve.")
    if settings.engine == "web":
        from zerosearch_trl.engines.web import PROVIDERS

        if settings.web_provider not in PROVIDERS:
            raise ValueError(f"--web_provider must be one of {', '.join(PROVIDERS)}, got {settings.web_provider!r}.")
    if settings.engine in ("simulated", "hybrid"):
        from zerosearch_trl.engines.simulated import SimulatedSearchEngine
        from zerosearch_trl.generation.factory import BACKENDS

        backend = _simulator_backend(settings)
        if backend not in BACKENDS:
            raise ValueError(f"--simulator_backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
        if backend == "openai" and not settings.simulator_base_url:
            raise ValueError("--simulator_backend openai needs --simulator_base_url, e.g. http://localhost:8000/v1.")
        SimulatedSearchEngine.check_settings(
            top_k=settings.search_top_k,
            noise_prob=settings.noise_prob,
            words_per_doc=settings.words_per_doc,
            leak_guard=settings.leak_guard,
            prompt_format=settings.prompt_format,
            per_document=settings.per_document,
        )
        if settings.simulator_batch_size < 1:
            raise ValueError(f"--simulator_batch_size must be >= 1, got {settings.simulator_batch_size}.")


def make_engine(
    settings: EngineSettings,
    *,
    simulator: TextGenerator | None = None,
    real: SearchEngine | None = None,
    corpus: Any = None,
) -> SearchEngine:
    """The engine that ``settings`` describe: checked first, then built (index, simulator model, client).

    Args:
        settings: what to build.
        simulator: an already built simulator generator to use instead of loading ``settings.simulator_model``
            (two engines can share one model's weights).
        real: hybrid only: an already built real engine to mix with the simulator instead of building one.
        corpus: bm25/dense (and a hybrid's real part) without ``settings.corpus``: the passages to index (a
            ``datasets.Dataset`` or list of ``{id, title, text}``) instead of the default demo world, e.g. the
            corpus of the demo task the questions come from (a demo world's facts depend on its size).

    Example:
        >>> make_engine(EngineSettings(engine="remote", search_url="http://127.0.0.1:8000/retrieve")).name
        'remote'
    """
    check_engine_settings(settings)
    cache = None
    if settings.cache_path:
        from zerosearch_trl.engines.cache import SearchCache

        cache = SearchCache(path=settings.cache_path)  # keys hold each engine's fingerprint: one file serves all
    if settings.engine == "simulated":
        return _simulated(settings, simulator, cache)
    if settings.engine != "hybrid":
        return _cached(_real(settings, settings.engine, corpus), cache)
    from zerosearch_trl.engines.hybrid import HybridEngine

    real = real if real is not None else _cached(_real(settings, settings.real_engine, corpus), cache)
    simulated = _simulated(settings, simulator, cache)
    return HybridEngine(real, simulated, real_prob=settings.real_prob, seed=settings.engine_seed)


def make_simulator(settings: EngineSettings) -> TextGenerator:
    """The simulator's text generator that ``settings`` describe (model, backend, server, batch size).

    Example:
        >>> make_simulator(EngineSettings(simulator_base_url="http://localhost:8000/v1")).name
        'openai'
    """
    from zerosearch_trl.generation.factory import make_generator

    return make_generator(
        _simulator_backend(settings),
        model=settings.simulator_model,
        base_url=settings.simulator_base_url,
        batch_size=settings.simulator_batch_size,
        **_server_options(settings),
    )


def split_engine_settings(settings: EngineSettings) -> list[EngineSettings]:
    """One checked copy of ``settings`` per name of a comma-separated ``settings.engine`` (``"simulated,bm25"``).

    Every name is checked before any engine is built, so a typo in the last one fails before the first loads a
    model.
    """
    names = [name.strip() for name in settings.engine.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--engine names no engine: got {settings.engine!r}; e.g. --engine simulated,bm25.")
    if len(set(names)) != len(names):
        raise ValueError(f"--engine names an engine twice: {settings.engine!r}.")
    each = [replace(settings, engine=name) for name in names]
    for one in each:
        check_engine_settings(one)
    return each


def make_engines(settings: EngineSettings) -> dict[str, SearchEngine]:
    """The engines of a comma-separated ``settings.engine``, by name (see :func:`split_engine_settings`)."""
    return {one.engine: make_engine(one) for one in split_engine_settings(settings)}


def _simulator_backend(settings: EngineSettings) -> str:
    return settings.simulator_backend or ("openai" if settings.simulator_base_url else "transformers")


def _server_options(settings: EngineSettings) -> dict[str, Any]:
    """The client's ``timeout``/``max_retries`` where the flags set them (each client keeps its own defaults)."""
    options = {"timeout": settings.server_timeout, "max_retries": settings.server_retries}
    return {key: value for key, value in options.items() if value is not None}


def _cached(engine: SearchEngine, cache: SearchCache | None) -> SearchEngine:
    if cache is None:
        return engine
    from zerosearch_trl.engines.cache import CachedSearchEngine

    return CachedSearchEngine(engine, cache)


def _real(settings: EngineSettings, kind: str, corpus: Any = None) -> SearchEngine:
    """A BM25 or dense engine (a saved index loaded, or one built from the corpus: ``--corpus``, else ``corpus``,
    else the default demo world's), or a client of a remote ``/retrieve`` server or a web search API."""
    if kind == "remote":
        from zerosearch_trl.engines.remote import RemoteSearchEngine

        return RemoteSearchEngine(settings.search_url, top_k=settings.search_top_k, **_server_options(settings))
    if kind == "web":
        from zerosearch_trl.engines.web import WebSearchEngine

        return WebSearchEngine(
            settings.web_provider,
            top_k=settings.search_top_k,
            base_url=settings.search_url,
            **_server_options(settings),
        )
    if kind == "dense":
        from zerosearch_trl.engines.dense import DenseEngine as Engine

        options = {"model": settings.dense_model}
    else:
        from zerosearch_trl.engines.bm25 import BM25Engine as Engine

        options = {}
    if settings.corpus and Engine.is_index(settings.corpus):
        return Engine.load(settings.corpus, top_k=settings.search_top_k, **options)
    if settings.corpus or corpus is not None:
        engine = Engine.from_corpus(settings.corpus or corpus, top_k=settings.search_top_k, **options)
    else:
        from zerosearch_trl.demo import make_demo_task

        logger.info("No --corpus: %s searches the generated demo corpus.", kind)
        engine = Engine.from_corpus(
            make_demo_task(seed=settings.engine_seed).corpus, top_k=settings.search_top_k, **options
        )
    if settings.save_index:
        engine.save(settings.save_index)
        logger.info("Saved the %s index to %s (load it next time with --corpus %s).", kind, *[settings.save_index] * 2)
    return engine


def _simulated(settings: EngineSettings, simulator: TextGenerator | None, cache: SearchCache | None) -> SearchEngine:
    from zerosearch_trl.engines.simulated import SimulatedSearchEngine, default_per_document

    per_document = settings.per_document
    if per_document is None:
        per_document = default_per_document(
            _simulator_backend(settings), settings.simulator_model, settings.prompt_format
        )
    budget = settings.simulator_max_new_tokens
    return SimulatedSearchEngine(
        simulator if simulator is not None else make_simulator(settings),
        top_k=settings.search_top_k,
        noise_prob=settings.noise_prob,
        words_per_doc=settings.words_per_doc,
        temperature=settings.simulator_temperature,
        leak_guard=settings.leak_guard,
        prompt_format=settings.prompt_format,
        per_document=per_document,
        cache=cache,
        seed=settings.engine_seed,
        **({"max_new_tokens": budget} if budget else {}),
    )
