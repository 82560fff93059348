"""The embedded model before any training, scored by ``evaluate`` with the simulator and with BM25, in one run.

    python benchmarks/bench_eval.py [--data-dir ../shared/data] [--limit 24] [--model default]

Datasets: the shared QA samples (NQ, HotpotQA, 2Wiki, MuSiQue) and the Wikipedia corpus's own questions
(``corpus/corpus-qa.jsonl``, which BM25 over ``corpus/wiki-passages.jsonl`` can answer); the first ``--limit`` rows of
each. Engines, side by side on the same rows: the prompt-only simulator (the embedded model writing documents,
noise 0) and BM25 over the corpus. Greedy, the training protocol (2 searches, 512 tokens, one-shot instruction and
``<think>`` prefill as the CPU job uses). Reports EM/F1/searches per dataset and engine, and seconds per question.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import write_result

from zerosearch_trl import EngineSettings, evaluate, make_engine, write_evaluation

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output-dir", type=Path, default=None, help="Also keep the full evaluation output here.")
    args = parser.parse_args()

    qa = args.data_dir / "qa"
    datasets = {
        "nq": qa / "nq.sample.jsonl",
        "hotpotqa": qa / "hotpotqa.sample.jsonl",
        "2wiki": qa / "2wiki.sample.jsonl",
        "musique": qa / "musique.sample.jsonl",
        "corpus-qa": args.data_dir / "corpus" / "corpus-qa.jsonl",
    }
    engines = {
        "simulated": make_engine(EngineSettings(engine="simulated", simulator_model=args.model)),
        "bm25": make_engine(
            EngineSettings(engine="bm25", corpus=str(args.data_dir / "corpus" / "wiki-passages.jsonl"))
        ),
    }
    result = evaluate(
        args.model,
        {name: str(path) for name, path in datasets.items()},
        engines,
        prompt_style="one_shot",
        limit=args.limit,
        batch_size=args.batch_size,
    )
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-eval-"))
    write_evaluation(result, out)
    keep = ("n", "exact_match", "cover_em", "f1", "mean_searches", "answered", "well_formed", "seconds_per_question")
    write_result(
        "evaluation",
        {
            "model": args.model,
            "limit_per_dataset": args.limit,
            "config": result.config,
            "scores": {
                engine: {
                    name: {k: block_scores.get(k) for k in keep}
                    for name, block_scores in [*block["datasets"].items(), ("overall", block["overall"])]
                }
                for engine, block in result.engines.items()
            },
            "output_dir": str(out),
        },
    )


if __name__ == "__main__":
    main()
