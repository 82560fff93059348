"""The one search-engine interface: ``search(requests) -> list[list[Document]]``, batched.

Every engine (simulated, BM25, dense, web, remote, hybrid) takes a batch of :class:`SearchRequest` and returns,
per request, exactly ``top_k`` :class:`Document` objects, or fewer with the reason in each document's
``meta["shortfall"]``. Engines never raise on a bad query: a failure becomes a fallback result, logged.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from zerosearch_trl.answers import cover_exact_match
from zerosearch_trl.generation.base import derive_seed

logger = logging.getLogger(__name__)

SEARCH_FAILED_TEXT = "The search failed; no results."
"""The one document a failed search returns, in both protocols."""


@dataclass(frozen=True)
class SearchRequest:
    """One query, with the episode's question and gold answers when known (the simulator needs them).

    ``draw_key`` names the search within its step (the search rollout sets episode and search index), so that an
    engine's random draw for it does not depend on the batch it travels in (:class:`RequestDraws`); it plays no
    part in equality, hence in caching.

    Example:
        >>> SearchRequest("Lyon country", question="In which country is Lyon?", golden_answers=("France",))
        SearchRequest(query='Lyon country', question='In which country is Lyon?', golden_answers=('France',))
    """

    query: str
    question: str | None = None
    golden_answers: tuple[str, ...] = ()
    draw_key: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Accept any iterable of answers (a list from a dataset row) but store a hashable tuple for caching.
        if isinstance(self.golden_answers, str):
            object.__setattr__(self, "golden_answers", (self.golden_answers,))
        else:
            object.__setattr__(self, "golden_answers", tuple(str(a) for a in self.golden_answers))


@dataclass
class Document:
    """A search result.

    Attributes:
        title: the document's title ("" when unknown).
        text: its text.
        meta: at least ``engine`` (name), ``label`` (``"useful"``/``"noisy"`` for simulated documents, ``None``
            for real ones) and ``contains_answer`` (whether a gold answer appears in it, ``None`` if unknown).

    Example:
        >>> doc = Document("Lyon", "Lyon is a city in France.", meta={"engine": "bm25"})
        >>> doc.contents
        'Lyon\\nLyon is a city in France.'
        >>> contains_answer(doc, ["France"])
        True
    """

    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def contents(self) -> str:
        """Title and text in one string, as shown to the policy and used for answer checks."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def contains_answer(document: Document, golden_answers: Sequence[str]) -> bool | None:
    """Whether a gold answer appears (normalised, whole words) in the document; ``None`` without golds."""
    if not golden_answers:
        return None
    return bool(cover_exact_match(document.contents, list(golden_answers)))


@runtime_checkable
class SearchEngine(Protocol):
    """Anything with a ``name``, a ``top_k`` and a batched ``search``.

    Example:
        >>> class Echo:  # no base class needed: the protocol is structural
        ...     name, top_k = "echo", 1
        ...     def search(self, requests):
        ...         return [[Document("", request.query)] for request in requests]
        >>> isinstance(Echo(), SearchEngine), Echo().search([SearchRequest("Lyon")])[0][0].text
        (True, 'Lyon')
    """

    name: str
    top_k: int

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """Return one list of documents per request, in order."""
        ...


def validate_top_k(top_k: int) -> int:
    """Check a ``top_k`` argument; raise a ValueError that names it and the fix."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (the number of documents per query), got {top_k!r}.")
    return top_k


def search_documents(engine: SearchEngine, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], bool]:
    """``engine.search(requests)`` that never raises; returns the results and whether the engine failed.

    An engine that raises, or returns a result count different from the request count, is logged and every
    request gets one document saying :data:`SEARCH_FAILED_TEXT` (``meta["fallback"]`` set), so that an episode goes
    on with an explicit failure notice instead of crashing the rollout.

    Example:
        >>> class Down:
        ...     name, top_k = "down", 1
        ...     def search(self, requests):
        ...         raise ConnectionError("index server down")
        >>> results, failed = search_documents(Down(), [SearchRequest("Lyon")])
        >>> failed, results[0][0].text
        (True, 'The search failed; no results.')
    """
    try:
        results = engine.search(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(requests)} queries")
        return results, False
    except Exception:  # a real engine may fail; the caller's episodes go on with an explicit failure notice
        logger.exception("Search engine %s failed on %d queries", getattr(engine, "name", "?"), len(requests))
        return [[Document("", SEARCH_FAILED_TEXT, {"fallback": True})] for _ in requests], True


ENGINE_KINDS = {
    "real": "documents retrieved by a real engine",
    "simulated": "documents a simulator wrote, told each question's gold answer when useful: an upper bound, not a "
    "measure of search",
    "hybrid": "real documents, mixed with a simulator's (told the gold answer when useful)",
}
"""What a score against each kind of engine means, for reports."""


def engine_kind(engine: object) -> str:
    """``"real"``, ``"simulated"`` or ``"hybrid"`` (a cache is seen through), a key of :data:`ENGINE_KINDS`.

    Example:
        >>> class Index:
        ...     name, top_k = "bm25", 3
        >>> engine_kind(Index())
        'real'
    """
    for _ in range(8):  # a cache, or another wrapper, holds the engine that writes the documents
        if hasattr(engine, "real") and hasattr(engine, "simulated"):
            return "hybrid"
        if hasattr(engine, "noise_prob"):
            return "simulated"
        inner = getattr(engine, "engine", None)
        if inner is None:
            break
        engine = inner
    return "real"


class RequestDraws:
    """An engine's random draws, one uniform number per request (useful or noisy, real or simulated).

    They restart at every optimisation step on every process (:meth:`reseed`), so processes draw apart and a run
    resumed at step ``i`` draws what an uninterrupted one would. A request with a ``draw_key`` draws from
    ``(seed, purpose, rank, step, draw_key)`` alone: the same search of the same episode gets the same draw whatever
    batch it travels in and whenever it comes (the episode scheduler's batches depend on timing). A request without
    one takes the next number of the step's stream. Unseeded (``seed=None``) draws are unseeded.

    Args:
        seed: the engine's seed, or ``None``.
        purpose: keeps two engines' draws apart (a hybrid's real-or-simulated draw and its simulator's
            useful-or-noisy draw under one seed).

    Example:
        >>> draws = RequestDraws(0, "noise")
        >>> draws.reseed(step=3, rank=1)
        >>> keyed = [SearchRequest("a", draw_key="episode-2|search-0"), SearchRequest("b")]
        >>> first = draws.uniforms(keyed)
        >>> draws.reseed(step=3, rank=1)
        >>> draws.uniforms([SearchRequest("b"), keyed[0]])[1] == first[0]  # the keyed draw ignores the order
        True
    """

    def __init__(self, seed: int | None, purpose: str) -> None:
        self.seed, self.purpose = seed, purpose
        self._lock = threading.Lock()
        self.reseed(step=0, rank=0)  # a fresh engine draws as step 0 of process 0

    def reseed(self, *, step: int, rank: int = 0, call: int | str = 0) -> None:
        """Restart the draws for rollout ``call`` of optimisation step ``step`` on process ``rank``: ``0``, ``1``...
        for training (TRL generates more than once per step when ``steps_per_generation`` is below the accumulation
        steps), ``"eval0"``, ``"eval1"``... for an evaluation's batches at that step."""
        with self._lock:
            self._where = f"{self.seed}|{rank}|{step}" + (f"|{call}" if call else "")
            self._stream = random.Random(None if self.seed is None else f"{self._where}|{self.purpose}")

    def seed_for(self, request: SearchRequest, *parts: object) -> int | None:
        """A generation seed of the request's own, from the same key as its draw (and ``parts``: the attempt, the
        document's slot), or ``None`` for an unseeded engine or a request without a ``draw_key``."""
        if self.seed is None or request.draw_key is None:
            return None
        with self._lock:
            where = self._where
        return derive_seed(where, self.purpose, request.draw_key, *parts)

    def uniforms(self, requests: Sequence[SearchRequest]) -> list[float]:
        """One number in ``[0, 1)`` per request."""
        with self._lock:
            return [
                self._stream.random()
                if request.draw_key is None or self.seed is None
                else random.Random(f"{self._where}|{self.purpose}|{request.draw_key}").random()
                for request in requests
            ]


def reseed_engine(engine: Any, *, step: int, rank: int, call: int | str = 0) -> None:
    """Restart ``engine``'s draws where it has a ``reseed`` method; ``call`` goes only to one that takes it (an
    engine written for ``reseed(*, step, rank)`` keeps working, drawing alike for every rollout of a step).

    Example:
        >>> class Old:
        ...     def reseed(self, *, step, rank=0):
        ...         print("reseeded", step, rank)
        >>> reseed_engine(Old(), step=2, rank=1, call=1)
        reseeded 2 1
    """
    reseed = getattr(engine, "reseed", None)
    if not callable(reseed):
        return
    parameters = inspect.signature(reseed).parameters.values()
    if any(p.name == "call" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        reseed(step=step, rank=rank, call=call)
    else:
        reseed(step=step, rank=rank)
