"""The episode scheduler: every episode advances on its own (turn -> search -> next turn), never waiting for others.

Two parts, joined by :class:`EpisodeScheduler`:

- a **turn generator** (:class:`TurnGenerator`): takes a request whenever an episode's turn is ready and returns
  the turns that finished. :class:`~zerosearch_trl.generation.continuous.ContinuousTransformersGenerator` is one
  (requests join and leave a running batch); :class:`LockstepTurns` makes any batched ``generate`` one, by
  generating every waiting request together: that is the synchronous rollout, kept for the backends and the
  multi-process runs where every process must take part in every generation;
- a **search queue** (:class:`SearchQueue`): searches wait while one batch is at the engine, then go together, so
  a simulator still answers batches; with a continuous generator the engine runs in a worker thread while the
  policy keeps generating.

Episodes keep the prompt order: the scheduler only mutates them, through the rollout's callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol, runtime_checkable

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest, search_documents
from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.rollout.episode import GenerateIds


@runtime_checkable
class TurnGenerator(Protocol):
    """A generator that accepts requests while it runs (see the module docstring)."""

    @property
    def idle(self) -> bool:
        """Whether no request is waiting or generating."""

    def submit(self, key: Hashable, input_ids: Sequence[int], params: GenerationParams) -> None:
        """Queue one request."""

    def step(self) -> list[tuple[Hashable, Generation]] | None:
        """Make progress; return the finished requests (``None``: no process has a request, in lockstep)."""

    def release(self, key: Hashable) -> None:
        """Forget what was kept for ``key`` (its episode is over)."""

    def reset(self) -> None:
        """Drop every request and everything kept (the caller is done with them, or failed)."""


class LockstepTurns:
    """A batched ``generate`` as a :class:`TurnGenerator`: each :meth:`step` generates every waiting request in one
    call, with the largest budget among them (the caller cuts each turn to its own).

    With ``collective=True`` a step calls ``generate`` even with no request of its own (processes that generate
    together), until it returns ``None`` (no process has a request).

    Example:
        >>> from zerosearch_trl.generation.base import Generation
        >>> turns = LockstepTurns(lambda inputs, params: [Generation("ok") for _ in inputs], GenerationParams())
        >>> turns.submit("a", [1, 2], GenerationParams(max_new_tokens=4)); turns.submit("b", [3], GenerationParams())
        >>> [(key, g.text) for key, g in turns.step()], turns.idle
        ([('a', 'ok'), ('b', 'ok')], True)
    """

    def __init__(self, generate: GenerateIds, params: GenerationParams, *, collective: bool = False) -> None:
        self.generate, self.params, self.collective = generate, params, collective
        self._waiting: list[tuple[Hashable, list[int], GenerationParams]] = []

    @property
    def idle(self) -> bool:
        return not self._waiting

    def submit(self, key: Hashable, input_ids: Sequence[int], params: GenerationParams) -> None:
        self._waiting.append((key, list(input_ids), params))

    def step(self) -> list[tuple[Hashable, Generation]] | None:
        waiting, self._waiting = self._waiting, []
        budget = max((params.max_new_tokens for _, _, params in waiting), default=1)
        generations = self.generate([ids for _, ids, _ in waiting], replace(self.params, max_new_tokens=budget))
        if generations is None:
            return None
        return [(key, generation) for (key, _, _), generation in zip(waiting, generations)]

    def release(self, key: Hashable) -> None:
        """Nothing is kept between turns."""

    def reset(self) -> None:
        self._waiting = []


SearchDone = tuple[Hashable, str, list[Document]]
"""A finished search: the episode's key, its query and the documents."""


class SearchQueue:
    """Searches of many episodes, sent to the engine in batches; one batch at the engine at a time.

    A search waits while a batch is at the engine (so requests gather into the next batch) or, when the caller is
    still generating, up to ``max_wait`` seconds for company. With ``threaded=False`` every batch runs in the
    caller's thread (the synchronous rollout).

    Example:
        >>> from zerosearch_trl.engines.base import Document
        >>> class Echo:
        ...     name, top_k = "echo", 1
        ...     def search(self, requests):
        ...         return [[Document(r.query, "found")] for r in requests]
        >>> queue = SearchQueue(Echo(), threaded=False)
        >>> queue.put("episode-0", SearchRequest("Lyon")); queue.put("episode-1", SearchRequest("Kyoto"))
        >>> [(key, query) for key, query, _ in queue.poll(block=True)], queue.calls, queue.requests
        ([('episode-0', 'Lyon'), ('episode-1', 'Kyoto')], 1, 2)

    Attributes:
        failures: searches answered by the failure notice of :func:`search_documents` (the engine raised, or
            answered with the wrong number of results), however they were batched.
        calls / requests: engine calls made and requests sent, for the mean batch size.
    """

    def __init__(self, engine: SearchEngine, *, threaded: bool, max_wait: float = 0.05) -> None:
        self.engine, self.threaded, self.max_wait = engine, threaded, max_wait
        self._pending: list[tuple[Hashable, SearchRequest]] = []
        self._since = 0.0
        self._in_flight: Future | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search") if threaded else None
        self.failures = self.calls = self.requests = 0

    @property
    def busy(self) -> bool:
        return bool(self._pending) or self._in_flight is not None

    def put(self, key: Hashable, request: SearchRequest) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append((key, request))

    def poll(self, *, block: bool) -> list[SearchDone]:
        """Send what is pending when it is time, and return the searches that came back (waiting for one batch
        if ``block`` and any search is outstanding)."""
        block = block or not self.threaded  # the synchronous rollout searches before its next turn
        done = self._collect(block=False)
        if self._in_flight is None and self._pending and (block or time.monotonic() - self._since >= self.max_wait):
            self._send()
        return done + (self._collect(block=True) if block and not done else [])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        self.calls += 1
        self.requests += len(batch)
        if self._pool is None:
            self._in_flight = Future()
            self._in_flight.set_result(self._run(batch))
        else:
            self._in_flight = self._pool.submit(self._run, batch)

    def _run(self, batch: list[tuple[Hashable, SearchRequest]]) -> tuple[list[SearchDone], int]:
        results, failed = search_documents(self.engine, [request for _, request in batch])
        done = [(key, request.query, list(docs)) for (key, request), docs in zip(batch, results)]
        return done, len(batch) if failed else 0

    def _collect(self, *, block: bool) -> list[SearchDone]:
        if self._in_flight is None or not (block or self._in_flight.done()):
            return []
        done, failed = self._in_flight.result()
        self._in_flight = None
        self.failures += failed
        return done


class EpisodeScheduler:
    """Plays episodes to their end with a :class:`TurnGenerator` and a :class:`SearchQueue`.

    The rollout supplies three callbacks, by episode key: ``next_turn(key)`` -> ``(input ids, params)`` or ``None``
    when the episode is over; ``turn_done(key, generation)`` -> the query to search, or ``None``;
    ``search_done(key, query, documents)`` (the observation is appended there).
    """

    def __init__(
        self,
        turns: TurnGenerator,
        searches: SearchQueue,
        *,
        next_turn: Callable[[Hashable], tuple[list[int], GenerationParams] | None],
        turn_done: Callable[[Hashable, Generation], str | None],
        search_done: Callable[[Hashable, str, list[Document]], None],
        make_request: Callable[[Hashable, str], SearchRequest],
    ) -> None:
        self.turns, self.searches = turns, searches
        self.next_turn, self.turn_done, self.search_done, self.make_request = (
            next_turn, turn_done, search_done, make_request,
        )  # fmt: skip

    def run(self, keys: Sequence[Hashable]) -> None:
        """Play the episodes ``keys`` until every one is over."""
        for key in keys:
            self._advance(key)
        # Processes that generate together keep stepping, with or without turns of their own, until none has one.
        collective = getattr(self.turns, "collective", False)
        while collective or not self.turns.idle or self.searches.busy:
            if collective or not self.turns.idle:
                finished = self.turns.step()
                if finished is None:  # lockstep: no process has a live row
                    break
                for key, generation in finished:
                    query = self.turn_done(key, generation)
                    if query is None:
                        self._advance(key)
                    else:
                        self.searches.put(key, self.make_request(key, query))
            for key, query, documents in self.searches.poll(block=self.turns.idle):
                self.search_done(key, query, documents)
                self._advance(key)

    def _advance(self, key: Hashable) -> None:
        """Submit the episode's next turn, or let the generator forget it."""
        turn = self.next_turn(key)
        if turn is None:
            self.turns.release(key)
        else:
            self.turns.submit(key, *turn)
