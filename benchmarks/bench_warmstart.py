"""Warm start on the embedded model: share of well-formed first-turn searches before and after, and its wall time.

    python benchmarks/bench_warmstart.py [--n 32] [--max_steps 8] [--batch_size 2] [--learning_rate 1e-4] [--lora]

The held-out questions are the first ``--n`` of ``make_demo_task(256, seed=0)``; the warm-start trajectories use
the rest of that task (``exclude_questions``). Both measurements sample with the GRPO settings (temperature 1,
top-p 0.95, seed 0). ``query_names_question_entity`` is the share of searches whose query appears in the question.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import write_result

from zerosearch_trl import load_default_model, make_demo_task, normalize_answer
from zerosearch_trl.training.probe import well_formed_search_share
from zerosearch_trl.training.warmstart import make_warmstart_dataset, warm_start


def summary(report: dict) -> dict:
    searches = [s for s in report["samples"] if s["action"] == "search"]
    named = sum(normalize_answer(s["content"]) in normalize_answer(s["question"]) for s in searches)
    return {
        "counts": report["counts"],
        "shares": report["shares"],
        "query_names_question_entity": round(named / len(searches), 3) if searches else None,
        "examples": [s["generated"] for s in report["samples"][:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="held-out questions (one sample each)")
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--lora", action="store_true")
    args = parser.parse_args()

    task = make_demo_task(256, seed=0)
    held_out = task.dataset.select(range(args.n))["question"]
    model, tokenizer = load_default_model()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    before = well_formed_search_share(model, tokenizer, held_out)
    probe_seconds = time.perf_counter() - start

    dataset = make_warmstart_dataset(
        task, n_examples=args.max_steps * args.batch_size, exclude_questions=held_out, seed=0
    )
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        model = warm_start(
            model,
            tokenizer,
            dataset,
            output_dir=output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lora=args.lora,
        )
        warm_start_seconds = time.perf_counter() - start
    after = well_formed_search_share(model, tokenizer, held_out)

    write_result(
        "warmstart" + ("_lora" if args.lora else ""),
        {
            "model": "SmolLM2-135M-Instruct (embedded)",
            "held_out": f"first {args.n} questions of make_demo_task(256, seed=0), excluded from the warm start",
            "settings": {
                "max_steps": args.max_steps,
                "per_device_train_batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "lora": args.lora,
                "examples": len(dataset),
                "prompt_style": "one_shot",
                "sampling": "temperature 1.0, top_p 0.95, 128 new tokens, seed 0",
            },
            "before": summary(before),
            "after": summary(after),
            "warm_start_seconds": round(warm_start_seconds, 1),
            "probe_seconds_before": round(probe_seconds, 1),
            # Other processes share the two cores at times: the load average says how much the timings suffered.
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        },
    )


if __name__ == "__main__":
    main()
