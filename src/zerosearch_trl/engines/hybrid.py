"""Mix a real engine and the simulator: per request, real with probability ``real_prob``, else simulated.

The draw is seeded and independent per request. When the real engine fails (it raises, or returns a wrong number
of results), its share of the batch goes to the simulator if ``fallback`` is on, else gets the explicit failure
notice of :func:`~zerosearch_trl.engines.base.search_documents`. Every document records in ``meta["served_by"]``
which engine served it, and ``meta["real_failed"]`` marks a fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from zerosearch_trl.engines.base import (
    Document,
    RequestDraws,
    SearchEngine,
    SearchRequest,
    reseed_engine,
    search_documents,
)


@dataclass
class HybridStats:
    """Per-request counters of a hybrid engine.

    Attributes:
        real: requests drawn for the real engine.
        simulated: requests drawn for the simulator.
        fallbacks: requests drawn for the real engine that the simulator served after a real failure.
        failures: requests drawn for the real engine that failed with no fallback (they get a failure notice).

    Example:
        >>> HybridStats(real=3, simulated=1).real_fraction
        0.75
    """

    real: int = 0
    simulated: int = 0
    fallbacks: int = 0
    failures: int = 0

    @property
    def real_fraction(self) -> float:
        """Share of requests drawn for the real engine."""
        total = self.real + self.simulated
        return self.real / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        """Counters plus ``real_fraction``."""
        return {**asdict(self), "real_fraction": self.real_fraction}


class HybridEngine:
    """A real engine and a simulated one behind one interface.

    Args:
        real: any engine (BM25, remote, web, ...).
        simulated: the simulated engine; the curriculum's ``noise_prob`` reaches it through this engine.
        real_prob: probability that a request goes to the real engine.
        fallback: serve the real engine's share with the simulator when the real engine fails (else those
            requests get the failure notice).
        seed: seeds the per-request draws.

    Attributes:
        stats: a :class:`HybridStats`.

    Example:
        >>> class Fixed:
        ...     def __init__(self, name):
        ...         self.name, self.top_k = name, 1
        ...     def search(self, requests):
        ...         return [[Document("", f"{self.name} result")] for _ in requests]
        >>> engine = HybridEngine(Fixed("bm25"), Fixed("simulated"), real_prob=0.5, seed=4)
        >>> [docs[0].meta["served_by"] for docs in engine.search([SearchRequest("q")] * 4)]
        ['bm25', 'simulated', 'bm25', 'bm25']
    """

    name = "hybrid"
    draws_per_request = True  # real or simulated, drawn per request: a cache keyed by the request would freeze it

    def __init__(
        self,
        real: SearchEngine,
        simulated: SearchEngine,
        *,
        real_prob: float = 0.5,
        fallback: bool = True,
        seed: int | None = None,
    ) -> None:
        if real.top_k != simulated.top_k:
            raise ValueError(
                f"The real and simulated engines must return the same number of documents, got top_k "
                f"{real.top_k} ({real.name}) and {simulated.top_k} ({simulated.name})."
            )
        self.real, self.simulated, self.top_k = real, simulated, real.top_k
        self.real_prob, self.fallback = real_prob, fallback
        self.stats = HybridStats()
        self.seed = seed
        self._lock = threading.Lock()
        self._draws = RequestDraws(seed, "engine")

    def reseed(self, *, step: int, rank: int = 0, call: int | str = 0) -> None:
        """Restart the real/simulated draws, and the simulator's useful/noisy ones, from ``(seed, rank, step)`` and
        the step's ``call``-th rollout (see :meth:`~zerosearch_trl.engines.simulated.SimulatedSearchEngine.reseed`)."""
        self._draws.reseed(step=step, rank=rank, call=call)
        reseed_engine(self.simulated, step=step, rank=rank, call=call)

    @property
    def real_prob(self) -> float:
        """Probability that a request goes to the real engine."""
        return self._real_prob

    @real_prob.setter
    def real_prob(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"real_prob must be in [0, 1], got {value!r}.")
        self._real_prob = float(value)

    @property
    def noise_prob(self) -> float:
        """The simulated engine's noise probability (what the curriculum sets)."""
        return self.simulated.noise_prob

    @noise_prob.setter
    def noise_prob(self, value: float) -> None:
        self.simulated.noise_prob = value

    @property
    def fingerprint(self) -> str:
        """Both engines and the mix, for cache keys."""
        real = getattr(self.real, "fingerprint", self.real.name)
        simulated = getattr(self.simulated, "fingerprint", self.simulated.name)
        return f"hybrid|{real}|{simulated}|p={self.real_prob}|fallback={self.fallback}"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """One batched call per engine; results in request order, each document tagged with ``served_by``."""
        to_real = [u < self._real_prob for u in self._draws.uniforms(requests)]
        real_ids = [i for i, real in enumerate(to_real) if real]
        simulated_ids = [i for i, real in enumerate(to_real) if not real]
        results: list[list[Document]] = [[] for _ in requests]
        fell_back: list[int] = []
        failed = False
        if real_ids:
            found, failed = search_documents(self.real, [requests[i] for i in real_ids])
            if failed and self.fallback:
                fell_back = real_ids
            else:
                self._place(results, real_ids, found, self.real.name, real_failed=failed)
        if simulated_ids or fell_back:
            ids = sorted(simulated_ids + fell_back)
            self._place(results, ids, self.simulated.search([requests[i] for i in ids]), self.simulated.name)
            for i in fell_back:
                for document in results[i]:
                    document.meta["real_failed"] = True
        with self._lock:
            self.stats.real += len(real_ids)
            self.stats.simulated += len(simulated_ids)
            self.stats.fallbacks += len(fell_back)
            self.stats.failures += len(real_ids) if failed and not self.fallback else 0
        return results

    @staticmethod
    def _place(
        results: list[list[Document]],
        ids: list[int],
        found: list[list[Document]],
        served_by: str,
        real_failed: bool = False,
    ) -> None:
        """Put each engine's results at their requests' positions, tagged with the engine that served them."""
        if len(found) != len(ids):
            raise RuntimeError(f"The {served_by} engine returned {len(found)} results for {len(ids)} requests.")
        for i, documents in zip(ids, found):
            for document in documents:
                document.meta["served_by"] = served_by
                if real_failed:
                    document.meta["real_failed"] = True
            results[i] = documents
