"""Cache hit vs miss latency, side by side: a miss is a real simulator call on the embedded model.

    python benchmarks/bench_cache.py [--misses 4] [--hits 2000]

Target: a hit >= 1000x faster than a miss (memory LRU and SQLite).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import write_result

from zerosearch_trl import SearchCache, SearchRequest, SimulatedSearchEngine, TransformersGenerator, load_default_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", type=int, default=4)
    parser.add_argument("--hits", type=int, default=2000)
    args = parser.parse_args()
    model, tokenizer = load_default_model()
    with tempfile.TemporaryDirectory() as folder:
        cache = SearchCache(path=Path(folder) / "cache.sqlite")
        engine = SimulatedSearchEngine(TransformersGenerator(model, tokenizer), per_document=True, cache=cache, seed=0)
        requests = [SearchRequest(f"query number {i}", f"question {i}?", ("answer",)) for i in range(args.misses)]
        miss_times = []
        for request in requests:
            start = time.perf_counter()
            engine.search([request], modes=["useful"])
            miss_times.append(time.perf_counter() - start)
        hit_times = []
        for i in range(args.hits):
            start = time.perf_counter()
            engine.search([requests[i % len(requests)]], modes=["useful"])
            hit_times.append(time.perf_counter() - start)
        # A fresh process would find the results on disk: measure a cold-memory SQLite hit.
        disk = SearchCache(path=Path(folder) / "cache.sqlite", max_entries=1)
        disk_times = []
        keys = [SearchCache.make_key(engine.fingerprint, r, "useful") for r in requests]
        for i in range(args.hits):
            disk._memory.clear()  # force the SQLite path
            start = time.perf_counter()
            assert disk.get(keys[i % len(keys)]) is not None
            disk_times.append(time.perf_counter() - start)
    miss, hit, disk_hit = statistics.median(miss_times), statistics.median(hit_times), statistics.median(disk_times)
    write_result(
        "cache_latency",
        {
            "miss_median_s": round(miss, 4),
            "memory_hit_median_s": hit,
            "sqlite_hit_median_s": disk_hit,
            "miss_over_memory_hit": round(miss / hit, 1),
            "miss_over_sqlite_hit": round(miss / disk_hit, 1),
            "cache_hits": cache.hits,
            "target": "hit >= 1000x faster than miss",
        },
    )


if __name__ == "__main__":
    main()
