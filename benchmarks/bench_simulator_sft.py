"""The simulator SFT recipe on CPU, end to end: the embedded model as a prompt-only simulator vs after a short LoRA
SFT on pairs collected from a real engine, both scored by ``check_simulator`` on the same held-out questions.

    python benchmarks/bench_simulator_sft.py [--data-dir ../shared/data] [--collect 128] [--heldout 24]
        [--max-steps 60] [--labelling contains_answer] [--policy default]

1. Collection: the embedded policy plays the first ``--collect`` questions of the Wikipedia corpus's own QA set
   (``corpus/corpus-qa.jsonl``) against BM25 over ``corpus/wiki-passages.jsonl``, greedy, the training protocol;
   every (query, documents) pair is kept and labelled by answer presence (default) or by the episode's outcome (the
   paper's labelling, which needs a policy that answers: the untrained embedded model reaches EM 0 against BM25, so
   it yields no useful pair; pass a trained ``--policy`` for it).
2. SFT: ``make_simulator_sft_dataset`` (balanced, deduplicated) and ``train_simulator`` (LoRA r 16, merged).
3. Check: ``check_simulator`` on the next ``--heldout`` questions (never collected from), for the embedded model
   with the prompt-only prompts and for the merged model with the fine-tuned prompts. Same questions, same seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import write_result

from zerosearch_trl import (
    EngineSettings,
    check_simulator,
    collect_simulator_data,
    load_qa_dataset,
    make_engine,
    make_simulator_sft_dataset,
    train_simulator,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEEP = ("useful_answer_rate", "noisy_leak_rate", "format_valid_rate", "distinct_documents", "distinct_bigrams")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collect", type=int, default=128, help="Questions played against BM25 for the pairs.")
    parser.add_argument("--heldout", type=int, default=24, help="Held-out questions for check_simulator.")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--labelling", default="contains_answer", choices=["outcome", "contains_answer"])
    parser.add_argument("--policy", default="default", help="The policy that searches during the collection.")
    parser.add_argument("--output-dir", type=Path, default=None, help="Keep the pairs and the simulator here.")
    args = parser.parse_args()
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-simulator-sft-"))
    corpus = args.data_dir / "corpus"

    questions = load_qa_dataset(str(corpus / "corpus-qa.jsonl"))
    collect_rows = questions.select(range(args.collect))
    heldout = questions.select(range(args.collect, args.collect + args.heldout))
    engine = make_engine(EngineSettings(engine="bm25", corpus=str(corpus / "wiki-passages.jsonl")))

    start = time.perf_counter()
    pairs = collect_simulator_data(args.policy, {"corpus-qa": collect_rows}, engine, prompt_style="one_shot")
    collect_s = time.perf_counter() - start
    sft = make_simulator_sft_dataset(pairs, labelling=args.labelling)

    start = time.perf_counter()
    merged = train_simulator("default", sft, output_dir=str(out / "simulator"), max_steps=args.max_steps, merge=True)
    sft_s = time.perf_counter() - start
    log = json.loads((out / "simulator" / "sft_log.json").read_text())
    losses = [entry["loss"] for entry in log if "loss" in entry]

    checks = {}
    for name, model, prompt_format in [
        ("prompt_only", "default", "prompt_only"),
        ("finetuned", str(merged), "finetuned"),
    ]:
        start = time.perf_counter()
        report = check_simulator(model, heldout, prompt_format=prompt_format, seed=0)
        checks[name] = {
            "model": model if model == "default" else "LoRA-merged embedded model",
            "prompt_format": prompt_format,
            **{k: report.get(k) for k in KEEP},
            "seconds": round(time.perf_counter() - start, 1),
            "samples": report.get("samples", [])[:2],
        }

    labels = pairs["label"] if args.labelling == "outcome" else pairs["doc_label"]
    write_result(
        "simulator_sft",
        {
            "collection": {
                "policy": args.policy,
                "questions": args.collect,
                "pairs": len(pairs),
                "useful_pairs": sum(label == "useful" for label in labels),
                "labelling": args.labelling,
                "seconds": round(collect_s, 1),
            },
            "sft": {
                "rows": len(sft),
                "max_steps": args.max_steps,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "seconds": round(sft_s, 1),
            },
            "heldout_questions": args.heldout,
            "check": checks,
            "output_dir": str(out),
        },
    )


if __name__ == "__main__":
    main()
