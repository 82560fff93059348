"""OpenAI backend throughput against a real local server (`transformers serve`, embedded model, CPU):
concurrency 1 vs 8, in one run.

    python benchmarks/bench_openai.py [--requests 16] [--max_tokens 48] [--continuous_batching]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import write_result

from zerosearch_trl import GenerationParams, OpenAIGenerator, default_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max_tokens", type=int, default=48)
    parser.add_argument("--continuous_batching", action="store_true", help="serve with --continuous-batching")
    args = parser.parse_args()
    port = free_port()
    executable = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    command = [executable, "serve", str(default_model_path()), "--port", str(port), "--host", "127.0.0.1"]
    if args.continuous_batching:
        command.append("--continuous-batching")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("transformers serve did not start") from None
                time.sleep(1)
        prompts = [
            [{"role": "user", "content": f"Write one sentence about the number {i}."}] for i in range(args.requests)
        ]
        params = GenerationParams(max_new_tokens=args.max_tokens, temperature=0.8, seed=0)
        OpenAIGenerator(f"http://127.0.0.1:{port}/v1").generate(prompts[:1], params)  # warm-up: loads the model
        results = {}
        for concurrency in (1, 8):
            generator = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", max_concurrency=concurrency)
            start = time.perf_counter()
            generations = generator.generate(prompts, params)
            seconds = time.perf_counter() - start
            results[str(concurrency)] = {
                "seconds": round(seconds, 2),
                "requests_per_s": round(len(prompts) / seconds, 3),
                "chars_per_s": round(sum(len(g.text) for g in generations) / seconds, 1),
                "errors": sum(g.finish_reason == "error" for g in generations),
            }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    write_result(
        "openai_backend" + ("_cb" if args.continuous_batching else ""),
        {
            "server": "transformers serve" + (" --continuous-batching" if args.continuous_batching else ""),
            "model": "SmolLM2-135M-Instruct (embedded)",
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "concurrency": results,
            "speedup_8_over_1": round(results["8"]["requests_per_s"] / results["1"]["requests_per_s"], 2),
        },
    )


if __name__ == "__main__":
    main()
