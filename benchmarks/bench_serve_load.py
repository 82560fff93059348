"""``zerosearch-trl serve`` under load on loopback: throughput, latency, errors, memory, and what happens past its
limits.

    python benchmarks/bench_serve_load.py [--seconds 20] [--clients 1,8,32] [--simulator-clients 16]

Phase ``bm25``: ``serve`` (BM25 over the demo corpus, the default limits) in its own process; for each client count,
that many threads post one-query ``/retrieve`` requests back to back for ``--seconds``. Reports requests/s, p50 and
p99 latency, errors (anything but HTTP 200, target 0), and the server's resident memory before and after all the
load (after a warm-up; no growth expected).

Phase ``simulator``: ``serve --engine simulated`` (the embedded model writing documents, seconds per request on a
CPU) with ``--max_concurrency 1 --max_queued 4``, hit by more clients than it can hold: every request must end
(HTTP 200, or 503 with ``Retry-After`` at once, never a hang); reports how many of each, the slowest answer and
memory before (after a warm-up request) and after. ``errors`` counts anything but 200 and 503 (target 0 in both).
Writes ``results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import requests
from common import write_result

from zerosearch_trl.demo import make_demo_task
from zerosearch_trl.training.config import SearchScriptArguments

JOB = SearchScriptArguments()
"""The job's defaults: its demo world holds demo_questions + heldout_questions people (a world depends on its size)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "zerosearch_trl.cli", "serve", "--port", str(port), "--log_level", "warning",
               *flags]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("serve did not become healthy in 300 s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def rss_mib(process: subprocess.Popen) -> float:
    root = psutil.Process(process.pid)
    return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)


def hammer(url: str, queries: list[str], clients: int, seconds: float, timeout: float) -> dict:
    """``clients`` threads posting back to back for ``seconds``; every answer's status and latency."""
    latencies: list[tuple[str, float]] = []
    statuses: Counter = Counter()
    retry_after: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        n = index
        while time.monotonic() < stop_at:
            body = {"queries": [queries[n % len(queries)]], "topk": 3, "return_scores": True}
            started = time.monotonic()
            try:
                answer = session.post(f"{url}/retrieve", json=body, timeout=timeout)
                status, after = str(answer.status_code), answer.headers.get("Retry-After")
            except requests.RequestException as error:
                status, after = type(error).__name__, None
            elapsed = time.monotonic() - started
            with lock:
                latencies.append((status, elapsed))
                statuses[status] += 1
                if after is not None:
                    retry_after[after] += 1
            if status == "503":
                time.sleep(float(after or 1))  # a polite client: what RemoteSearchEngine does
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    ok = [elapsed for status, elapsed in latencies if status == "200"] or [float("nan")]
    # inclusive: a percentile of few requests stays within what was measured (exclusive extrapolates past the max)
    quantiles = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else ok * 99
    refused = [elapsed for status, elapsed in latencies if status == "503"]
    return {
        "clients": clients,
        "seconds": round(took, 1),
        "requests": len(latencies),
        "requests_per_second": round(statuses["200"] / took, 2),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "max_ms": round(max(elapsed for _, elapsed in latencies) * 1000, 1),
        "slowest_503_ms": round(max(refused) * 1000, 1) if refused else None,
        "statuses": dict(statuses),
        "busy_503": statuses["503"],
        "errors": sum(n for status, n in statuses.items() if status not in ("200", "503")),
        "retry_after": dict(retry_after),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Load per client count.")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--simulator-clients", type=int, default=16)
    parser.add_argument("--phases", default="bm25,simulator")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zs-serve-load-"))
    questions = list(make_demo_task(JOB.demo_questions + JOB.heldout_questions, seed=0).dataset["question"])
    result: dict = {"settings": {"seconds": args.seconds}}
    if "bm25" in args.phases:
        process, url = start_serve(["--engine", "bm25"], work / "bm25.log")
        try:
            hammer(url, questions, 4, 3.0, timeout=30)  # warm-up: the allocator and the index's caches
            before = rss_mib(process)
            levels = [hammer(url, questions, int(c), args.seconds, timeout=30) for c in args.clients.split(",")]
            result["bm25"] = {"limits": "defaults (max_concurrency 8, max_queued 64)", "levels": levels,
                              "rss_mib_before": before, "rss_mib_after": rss_mib(process)}  # fmt: skip
        finally:
            stop(process)
        print(json.dumps(result["bm25"]), flush=True)
    if "simulator" in args.phases:
        flags = ["--engine", "simulated", "--top_k", "3", "--max_concurrency", "1", "--max_queued", "4"]
        process, url = start_serve(flags, work / "simulator.log")
        try:
            hammer(url, questions, 1, 1.0, timeout=600)  # warm-up: the first generations size the caches
            before = rss_mib(process)
            level = hammer(url, questions, args.simulator_clients, args.seconds * 3, timeout=600)
            result["simulator"] = {"limits": "max_concurrency 1, max_queued 4", "load": level,
                                   "rss_mib_before": before, "rss_mib_after": rss_mib(process)}  # fmt: skip
        finally:
            stop(process)
        print(json.dumps(result["simulator"]), flush=True)
    write_result("serve_load", result)


if __name__ == "__main__":
    main()
