"""Real engines on the shared Wikipedia corpus: index build time and size, batched queries/s, top-5 answer recall by
dataset (BM25, and with ``--dense`` the MiniLM dense engine, side by side), and ``zerosearch-trl serve`` throughput
over loopback HTTP at client concurrency 1 vs 8, in one run.

    python benchmarks/bench_engines.py [--corpus-dir ../shared/data/corpus] [--http-requests 400] [--dense]
        [--hybrid-sample 20]

``--dense`` embeds all 27k passages with all-MiniLM-L6-v2: minutes on a GPU or a free multi-core CPU.
``--hybrid-sample N`` adds, on the first N questions of each dataset, the recall of the embedded prompt-only simulator
and of hybrids (each real engine mixed with it half and half), beside the real engines on the same questions.

Recall: share of questions with a gold answer in a returned passage (normalised whole-word match, as the rewards
judge answers), the raw question as the query; yes/no questions are left out (their answer word is rarely in the
passage). The server runs in its own process (the real CLI, loading the saved index), so the clients here do not
share its interpreter lock; each HTTP request carries one query, as a rollout's search does.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import write_result

from zerosearch_trl import (
    BM25Engine,
    DenseEngine,
    EngineSettings,
    HybridEngine,
    RemoteSearchEngine,
    RemoteSearchError,
    SearchEngine,
    SearchRequest,
    make_engine,
)
from zerosearch_trl.engines.factory import make_simulator

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def folder_mb(folder: Path, exclude: str | None = None) -> float:
    return round(sum(f.stat().st_size for f in folder.iterdir() if f.name != exclude) / 2**20, 2)


def load_questions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def answerable_by_source(questions: list[dict]) -> dict[str, list[SearchRequest]]:
    """The questions as requests with their gold answers, by dataset, yes/no questions left out."""
    by_source: dict[str, list[SearchRequest]] = collections.defaultdict(list)
    for row in questions:
        if row["golden_answers"][0].strip().lower() not in ("yes", "no"):
            by_source[row["data_source"]].append(SearchRequest(row["question"], golden_answers=row["golden_answers"]))
    return dict(sorted(by_source.items()))


def recall_by_source(engine: SearchEngine, by_source: dict[str, list[SearchRequest]]) -> dict:
    recall = {}
    for source, requests in by_source.items():
        found = sum(any(d.meta.get("contains_answer") for d in docs) for docs in engine.search(requests))
        recall[source] = {"questions": len(requests), "top5_recall": round(found / len(requests), 3)}
    total = sum(r["questions"] for r in recall.values())
    recall["all"] = {
        "questions": total,
        "top5_recall": round(sum(r["top5_recall"] * r["questions"] for r in recall.values()) / total, 3),
    }
    return recall


def sample_recall(real: dict[str, SearchEngine], by_source: dict[str, list[SearchRequest]], per_source: int) -> dict:
    """Recall of each real engine, of the embedded prompt-only simulator (noise 0) and of a hybrid of each real
    engine with it (real_prob 0.5), on the same first ``per_source`` questions of each dataset."""
    sample = {source: requests[:per_source] for source, requests in by_source.items()}
    simulator = make_simulator(EngineSettings())
    engines = dict(real)
    engines["simulated"] = make_engine(EngineSettings(engine="simulated"), simulator=simulator)
    for name, engine in real.items():
        settings = EngineSettings(engine="hybrid", real_engine=name, real_prob=0.5)
        engines[f"hybrid_{name}"] = make_engine(settings, simulator=simulator, real=engine)
    figures = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        figures[name] = {"recall": recall_by_source(engine, sample), "seconds": round(time.perf_counter() - start, 1)}
        if isinstance(engine, HybridEngine):
            figures[name]["real_fraction"] = round(engine.stats.real_fraction, 3)
    return {
        "questions_per_source": per_source,
        "simulator": "embedded SmolLM2-135M-Instruct, prompt-only, noise 0 (useful documents are told the answer)",
        "hybrid_real_prob": 0.5,
        **figures,
    }


def queries_per_second(engine: SearchEngine, requests: list[SearchRequest], batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        engine.search(requests[i : i + batch_size])
    return round(len(requests) / (time.perf_counter() - start), 1)


def start_server(index: Path, port: int, max_concurrency: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "zerosearch_trl.cli", "serve", "--corpus", str(index), "--port", str(port)]
    command += ["--max_concurrency", str(max_concurrency), "--log_level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = RemoteSearchEngine(f"http://127.0.0.1:{port}", max_retries=0, timeout=5)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            client.health()
            return process
        except RemoteSearchError:
            if process.poll() is not None:
                raise RuntimeError(f"zerosearch-trl serve exited with code {process.returncode}") from None
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("zerosearch-trl serve did not answer within 180 s")


def http_throughput(url: str, requests: list[SearchRequest], concurrency: int) -> dict:
    client = RemoteSearchEngine(url, top_k=5)
    client.search(requests[:concurrency])  # warm-up: connections, first-call costs

    def one(request: SearchRequest) -> float:
        start = time.perf_counter()
        client.search([request])
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, requests))
    wall = time.perf_counter() - start
    return {
        "requests": len(requests),
        "requests_per_s": round(len(requests) / wall, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
    }


def measure(engine_class: type, passages: Path, questions: list[dict], folder: Path, batch_sizes: tuple) -> tuple:
    """Build, save, reload and query one engine; return it, its saved folder and its figures."""
    start = time.perf_counter()
    engine = engine_class.from_corpus(passages, top_k=5)
    build_s = time.perf_counter() - start
    index = engine.save(folder)
    start = time.perf_counter()
    engine_class.load(index, top_k=5)
    load_s = time.perf_counter() - start
    requests = [SearchRequest(q["question"]) for q in questions]
    figures = {
        "build_s": round(build_s, 2),
        "load_s": round(load_s, 2),
        "index_mb": folder_mb(index, exclude="passages.jsonl"),
        "with_passages_mb": folder_mb(index),
        "queries_per_s": {f"batch_{b}": queries_per_second(engine, requests, b) for b in batch_sizes},
        "recall": recall_by_source(engine, answerable_by_source(questions)),
    }
    return engine, index, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--http-requests", type=int, default=400, help="single-query HTTP requests per concurrency")
    parser.add_argument("--dense", action="store_true", help="also build and measure the dense engine")
    parser.add_argument(
        "--hybrid-sample",
        type=int,
        default=0,
        help="questions per dataset on which to compare the real engines with the simulator and the hybrids",
    )
    args = parser.parse_args()
    passages, questions = args.corpus_dir / "wiki-passages.jsonl", load_questions(args.corpus_dir / "corpus-qa.jsonl")
    requests = [SearchRequest(q["question"]) for q in questions]
    result: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        engine, index, result["bm25"] = measure(
            BM25Engine, passages, questions, Path(folder) / "bm25", (1, 64, len(questions))
        )
        if args.dense:
            dense, _, result["dense"] = measure(DenseEngine, passages, questions, Path(folder) / "dense", (1, 64))
            result["dense"]["mb_per_1k_passages"] = round(dense.memory_per_1k_passages_mb, 3)
        if args.hybrid_sample:
            real = {"bm25": engine, **({"dense": dense} if args.dense else {})}
            result["sample_recall"] = sample_recall(real, answerable_by_source(questions), args.hybrid_sample)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(index, port, max_concurrency=8)
        try:
            url = f"http://127.0.0.1:{port}"
            http_requests = (requests * (1 + args.http_requests // len(requests)))[: args.http_requests]
            http = {f"concurrency_{c}": http_throughput(url, http_requests, c) for c in (1, 8)}
            start = time.perf_counter()
            RemoteSearchEngine(url, top_k=5, timeout=120).search(requests)
            http["one_request_all_queries_qps"] = round(len(requests) / (time.perf_counter() - start), 1)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    corpus = {"passages": len(engine), "questions": len(questions), "path": "../shared/data/corpus"}
    write_result("engines", {"corpus": corpus, **result, "serve_http_bm25": {"server_max_concurrency": 8, **http}})


if __name__ == "__main__":
    main()
