"""Search-result caching: an in-memory LRU, optionally backed by SQLite so it survives a restart.

``SearchCache`` is the store; ``CachedSearchEngine`` wraps any engine with it. Keys combine the engine's
fingerprint and the whole request (and, for the simulator, the useful/noisy mode), so two engines or two
simulator settings never share entries. Safe to use from several threads; SQLite runs in WAL mode so several
processes can share one file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest


class SearchCache:
    """An LRU of search results, with an optional SQLite file behind it.

    Args:
        max_entries: results kept in memory (least recently used evicted first).
        path: SQLite file; ``None`` keeps the cache in memory only.

    Example:
        >>> cache = SearchCache(max_entries=1000, path="search-cache.sqlite")  # doctest: +SKIP
        >>> engine = CachedSearchEngine(bm25_engine, cache)  # doctest: +SKIP
    """

    def __init__(self, max_entries: int = 100_000, path: str | Path | None = None) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}.")
        self.max_entries = max_entries
        self.path = Path(path) if path is not None else None
        self.hits = self.misses = 0
        self._memory: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, documents TEXT NOT NULL)")
            self._db.commit()

    @staticmethod
    def make_key(fingerprint: str, request: SearchRequest, mode: str | None = None) -> str:
        """A stable key for ``request`` served by the engine with ``fingerprint`` (in ``mode``)."""
        payload = json.dumps([fingerprint, request.query, request.question, list(request.golden_answers), mode])
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> list[Document] | None:
        """Fresh copies of the cached documents, or ``None``."""
        with self._lock:
            blob = self._memory.get(key)
            if blob is not None:
                self._memory.move_to_end(key)
            elif self._db is not None:
                row = self._db.execute("SELECT documents FROM results WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    blob = row[0]
                    self._remember(key, blob)
            if blob is None:
                self.misses += 1
                return None
            self.hits += 1
        return [Document(**d) for d in json.loads(blob)]

    def put(self, key: str, documents: Sequence[Document]) -> None:
        """Store ``documents`` under ``key`` (in memory, and on disk when a path was given)."""
        blob = json.dumps([{"title": d.title, "text": d.text, "meta": d.meta} for d in documents])
        with self._lock:
            self._remember(key, blob)
            if self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (key, blob))
                self._db.commit()

    def _remember(self, key: str, blob: str) -> None:
        self._memory[key] = blob
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            if self._db is not None:
                return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            return len(self._memory)

    def close(self) -> None:
        """Close the SQLite connection (the in-memory part stays usable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class CachedSearchEngine:
    """Serve repeated requests from a :class:`SearchCache`; forward the misses to ``engine`` in one batch.

    Example:
        >>> engine = CachedSearchEngine(BM25Engine.load("index/"), SearchCache(path="cache.sqlite"))  # doctest: +SKIP
    """

    def __init__(self, engine: SearchEngine, cache: SearchCache | None = None) -> None:
        if getattr(engine, "draws_per_request", False):
            raise ValueError(
                f"CachedSearchEngine keys results by request only, which would freeze the per-request draw of "
                f"{type(engine).__name__} (useful/noisy, real/simulated). Cache the parts instead: "
                "SimulatedSearchEngine(..., cache=SearchCache()) for the simulator, and for a hybrid "
                "HybridEngine(CachedSearchEngine(real), SimulatedSearchEngine(..., cache=SearchCache()))."
            )
        self.engine = engine
        self.cache = cache if cache is not None else SearchCache()
        self.name, self.top_k = engine.name, engine.top_k

    @property
    def fingerprint(self) -> str:
        """The wrapped engine's fingerprint (its class, name and top_k when it has none)."""
        return getattr(self.engine, "fingerprint", f"{type(self.engine).__name__}|{self.name}|k={self.top_k}")

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """Cached results where present; one batched call to the engine for the rest."""
        keys = [SearchCache.make_key(self.fingerprint, r) for r in requests]
        results = [self.cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fetched = self.engine.search([requests[i] for i in missing])
            if len(fetched) != len(missing):
                raise RuntimeError(f"{self.name} returned {len(fetched)} results for {len(missing)} requests.")
            for i, documents in zip(missing, fetched):
                results[i] = documents
                if not any(d.meta.get("fallback") for d in documents):  # a failure is retried next time
                    self.cache.put(keys[i], documents)
        return results  # type: ignore[return-value]
