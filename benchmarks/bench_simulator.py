"""Simulator throughput on the embedded model: batched requests vs one request at a time, in one run.

    python benchmarks/bench_simulator.py [--sequential 8] [--batched 16 64]

Sequential = what a per-row loop does: one request per ``search`` call, generator batch size 1. Batched = one
``search`` call over N requests, generator batch size 64. Documents/s and generated characters/s are reported;
the target on 2 CPU cores is batched >= 5x sequential documents/s.
"""

from __future__ import annotations

import argparse
import time

from common import write_result

from zerosearch_trl import (
    SearchRequest,
    SimulatedSearchEngine,
    TransformersGenerator,
    load_default_model,
    make_demo_task,
)


def run(engine: SimulatedSearchEngine, requests: list[SearchRequest], per_call: int) -> dict:
    start = time.perf_counter()
    results = []
    for i in range(0, len(requests), per_call):
        results += engine.search(requests[i : i + per_call])
    seconds = time.perf_counter() - start
    documents = [d for r in results for d in r if not d.meta.get("placeholder")]
    return {
        "requests": len(requests),
        "seconds": round(seconds, 2),
        "documents_per_s": round(len(documents) / seconds, 3),
        "chars_per_s": round(sum(len(d.text) for d in documents) / seconds, 1),
        "placeholder_share": round(1 - len(documents) / (len(requests) * engine.top_k), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=8, help="requests served one at a time")
    parser.add_argument("--batched", type=int, nargs="+", default=[16, 64], help="batch sizes to measure")
    args = parser.parse_args()
    model, tokenizer = load_default_model()
    task = make_demo_task(max(args.batched + [args.sequential]), seed=0)
    requests = [SearchRequest(q, q, tuple(a)) for q, a in zip(task.dataset["question"], task.dataset["golden_answers"])]

    def engine(batch_size: int) -> SimulatedSearchEngine:
        # Retries off: every configuration then does exactly top_k generations per request.
        return SimulatedSearchEngine(
            TransformersGenerator(model, tokenizer, batch_size=batch_size), per_document=True, max_retries=0, seed=0
        )

    sequential = run(engine(1), requests[: args.sequential], per_call=1)
    batched = {str(n): run(engine(64), requests[:n], per_call=n) for n in args.batched}
    write_result(
        "simulator_throughput",
        {
            "model": "SmolLM2-135M-Instruct (embedded)",
            "mode": "per_document, top_k=5, max_retries=0",
            "sequential": sequential,
            "batched": batched,
            "speedup_documents_per_s": {
                n: round(b["documents_per_s"] / sequential["documents_per_s"], 2) for n, b in batched.items()
            },
            "target": "batched >= 5x sequential documents/s",
        },
    )


if __name__ == "__main__":
    main()
