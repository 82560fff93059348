"""The search engine as a TRL environment: ``GRPOTrainer(..., environment_factory=SimulatedSearchEnv(engine))``.

This is the tool-calling alternative to the tag protocol of :mod:`zerosearch_trl.rollout`: TRL's own loop generates,
parses the chat template's tool calls (``<tool_call>{"name": "search", ...}</tool_call>`` for Qwen-style templates)
and calls the environment's one tool, :meth:`SimulatedSearchEnv.search`, whose result it appends as a tool message
masked out of the loss. The documents are the same as in the tag protocol: for the same engine and the same
useful/noisy draw, a search returns exactly the text that the tag protocol wraps in ``<information>...</information>``
(see :func:`~zerosearch_trl.protocol.render_documents`); only the wrapping differs, since the chat template adds its
own tool-response markers. (The draws themselves differ: the tag rollout keys each search's draw by its episode and
its place in it; an environment, which does not know its episode's place in TRL's batch, draws in call order.)

How TRL 1.16 uses an environment factory: it calls the factory once at construction (to read the tools) and then
once per concurrent rollout slot, keeps the instances in a pool and reuses them across batches, calling
``reset(**row)`` with the full dataset row before each episode. Every public method other than ``reset`` and
``get_reward`` becomes a tool, so this class has exactly one (``search``); everything else is an attribute or a
property. Reward functions receive the episode's instances as the ``environments`` keyword.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from zerosearch_trl.answers import as_gold_list
from zerosearch_trl.engines.base import SearchEngine, SearchRequest, search_documents
from zerosearch_trl.protocol import render_documents

EMPTY_QUERY_TEXT = "The query is empty: call search with the words to look for."
"""Tool result for an empty query (the tag protocol treats ``<search></search>`` as an invalid action)."""


class SimulatedSearchEnv:
    """A search environment for TRL's ``environment_factory``; every instance shares one engine.

    Build one around an engine and pass it as the factory: calling it returns a fresh environment on the same
    engine, so all of TRL's rollout slots share the engine's generator, its cache and the noise level that the
    curriculum sets (``env.engine.noise_prob``, or ``env.noise_prob``). Each instance plays one episode at a time:
    :meth:`reset` reads the row's question and gold answers (``golden_answers``, else ``answer``), which every
    search request carries so that the simulator can write useful documents. Per-episode counters stay readable
    after the episode, e.g. by a reward function through TRL's ``environments`` keyword.

    The tokenizer needs a chat template that renders tools, and a response parser for its tool calls: TRL adds
    the parser itself for the templates it knows (Qwen2.5/Qwen3, Llama 3.1, ...). Cap the searches per episode
    with ``GRPOConfig(max_tool_calling_iterations=...)`` (the paper's two searches: 2).

    For TRL's ``AsyncGRPOTrainer``, which sends the factory to a spawned worker process, build it from an
    ``engine_factory`` instead: a picklable callable (a module-level function, or
    ``functools.partial(make_engine, EngineSettings(...))``) that the worker calls once, on first use, to build its
    own engine. The trainer's curriculum callback does not reach an engine in another process: there the noise
    level is the one the factory builds.

    Args:
        engine: any search engine (simulated, real, cached); used as is, never copied, never pickled.
        engine_factory: instead of ``engine``, what builds it, in the process where the environment runs.

    Attributes:
        engine: the shared engine.
        question: the current episode's question (``None`` when the row has none).
        golden_answers: its gold answers.
        search_queries: the queries searched in this episode, in order.
        noisy_searches: searches in this episode that returned noisy (simulated) documents.
        search_failures: searches in this episode whose engine call failed.

    Example:
        >>> from zerosearch_trl.engines.base import Document
        >>> class OneDoc:  # any engine; SimulatedSearchEngine in training
        ...     name, top_k = "one-doc", 1
        ...     def search(self, requests):
        ...         return [[Document("Lyon", f"Lyon is in France ({r.question})")] for r in requests]
        >>> factory = SimulatedSearchEnv(OneDoc())  # GRPOTrainer(..., environment_factory=factory)
        >>> env = factory()  # what TRL does for each rollout slot
        >>> env.reset(prompt=[], question="Where is Lyon?", golden_answers=["France"])
        >>> env.search("Lyon country")
        'Doc 1 (Title: Lyon) Lyon is in France (Where is Lyon?)'
        >>> env.num_searches, env.engine is factory.engine
        (1, True)

        A reward function can read the episodes' counters:

        >>> def search_bonus(completions, environments, **kwargs):
        ...     return [0.1 * min(env.num_searches, 1) for env in environments]
    """

    def __init__(
        self, engine: SearchEngine | None = None, *, engine_factory: Callable[[], SearchEngine] | None = None
    ) -> None:
        if (engine is None) == (engine_factory is None):
            raise ValueError(
                "SimulatedSearchEnv needs a search engine, as exactly one of engine= (an engine to share in this process) or "
                "engine_factory= (a picklable callable that builds it where the environment runs, e.g. "
                "functools.partial(make_engine, EngineSettings(...)) for TRL's AsyncGRPOTrainer)."
            )
        if engine is not None and not callable(getattr(engine, "search", None)):
            raise ValueError(
                f"SimulatedSearchEnv needs a search engine with a batched search() method, got {engine!r}; "
                "e.g. SimulatedSearchEngine(TransformersGenerator(model, tokenizer))."
            )
        if engine_factory is not None and not callable(engine_factory):
            raise ValueError(f"engine_factory must be callable (it builds the engine), got {engine_factory!r}.")
        self._shared = _SharedEngine(engine, engine_factory)
        self.question: str | None = None
        self.golden_answers: tuple[str, ...] = ()
        self.search_queries: list[str] = []
        self.noisy_searches = 0
        self.search_failures = 0

    @property
    def engine(self) -> SearchEngine:
        """The engine every environment from this factory shares (built on first use from ``engine_factory``)."""
        return self._shared.get()

    def __call__(self) -> SimulatedSearchEnv:
        """A fresh environment on the same engine: this is what makes an instance usable as TRL's factory."""
        fresh = type(self).__new__(type(self))
        fresh.__dict__.update(self.__dict__)
        fresh.reset()
        return fresh

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self._shared.describe()!r})"

    @property
    def noise_prob(self) -> float:
        """The shared engine's probability of noisy documents (set by the curriculum during training)."""
        return self.engine.noise_prob

    @noise_prob.setter
    def noise_prob(self, value: float) -> None:
        if not hasattr(self.engine, "noise_prob"):
            raise AttributeError(f"The engine {self.engine!r} has no noise_prob: only a simulated engine has noise.")
        self.engine.noise_prob = value

    @property
    def num_searches(self) -> int:
        """Searches run in this episode."""
        return len(self.search_queries)

    @property
    def noisy_fraction(self) -> float:
        """Share of this episode's searches that returned noisy documents (0.0 without searches)."""
        return self.noisy_searches / self.num_searches if self.num_searches else 0.0

    def reset(self, question: str | None = None, golden_answers: Any = None, answer: Any = None, **row: Any) -> None:
        """Start an episode for one dataset row; TRL passes the whole row as keywords.

        Returns ``None``: the row's prompt already holds the question, so nothing is appended to it.

        Args:
            question: the question, attached to every search request of the episode.
            golden_answers: the gold answers (a string, a list, or a ``{"target": [...]}`` cell).
            answer: used as the gold answers when the row has no ``golden_answers`` column.
            **row: the other columns (``prompt``, ...), ignored.
        """
        self.question = question
        self.golden_answers = tuple(as_gold_list(golden_answers if golden_answers is not None else answer))
        self.search_queries = []
        self.noisy_searches = 0
        self.search_failures = 0

    def search(self, query: str) -> str:
        """Search the web and return the top results, one document per line.

        Args:
            query: What to search for, in a few words.

        Returns:
            The documents found, each as "Doc i (Title: title) text".
        """
        query = str(query).strip()
        if not query:
            return EMPTY_QUERY_TEXT
        request = SearchRequest(query, self.question, self.golden_answers)
        (documents,), failed = search_documents(self.engine, [request])
        self.search_queries.append(query)
        self.search_failures += failed
        self.noisy_searches += any(d.meta.get("label") == "noisy" for d in documents)
        return render_documents(documents)


class _SharedEngine:
    """The engine that a factory's environments share. Pickled (TRL's AsyncGRPOTrainer sends the factory to a
    spawned worker), it carries its ``engine_factory`` and never a built engine: the engine is built once per
    process, on first use, so a model, an index or a connection never crosses processes."""

    def __init__(self, engine: SearchEngine | None, factory: Callable[[], SearchEngine] | None) -> None:
        self._engine, self._factory = engine, factory
        self._lock = threading.Lock()

    def get(self) -> SearchEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._factory()
        return self._engine

    def describe(self) -> str:
        if self._engine is not None:
            return getattr(self._engine, "name", type(self._engine).__name__)
        return f"built by {getattr(self._factory, '__name__', type(self._factory).__name__)}"

    def __getstate__(self) -> dict[str, Any]:
        if self._factory is None:
            raise TypeError(
                "This SimulatedSearchEnv holds an engine instance, which cannot be sent to another process (a "
                "model, an index, a connection). Build it with SimulatedSearchEnv(engine_factory=...) and a "
                "picklable callable, e.g. functools.partial(make_engine, EngineSettings(...)), so that each process "
                "builds its own engine."
            )
        return {"factory": self._factory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None, state["factory"])
