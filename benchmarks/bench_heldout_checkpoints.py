"""Held-out scores along a ``zerosearch-trl train`` run: each checkpoint scored by ``evaluate``, in one run.

    python benchmarks/bench_heldout_checkpoints.py --run-dir runs/zerosearch [--name heldout_checkpoints]

For a run of the default job (the demo task): the warm-started model (the start of RL), every ``checkpoint-N`` and
the final model answer the job's held-out demo questions (never trained on), greedy, with the job's protocol, against
a noise-free simulator written by the embedded model (the job's simulator, 3 documents per search). Reports F1, EM,
searches per question and well-formed share per step, with the run's per-step seconds and training reward.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import write_result

from zerosearch_trl import EngineSettings, evaluate, make_engine
from zerosearch_trl.training.job import SearchScriptArguments, load_training_data
from zerosearch_trl.training.logs import read_metrics


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if (run_dir / "warm_start" / "model").is_dir():
        found.append((0, run_dir / "warm_start" / "model"))
    for folder in run_dir.glob("checkpoint-*"):
        found.append((int(folder.name.split("-")[1]), folder))
    steps = {step for step, _ in found}
    final = (
        json.loads((run_dir / "summary.json").read_text())["steps"] if (run_dir / "summary.json").is_file() else None
    )
    if final is not None and final not in steps and (run_dir / "model.safetensors").is_file():
        found.append((final, run_dir))
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--name", default="heldout_checkpoints")
    parser.add_argument("--steps", default=None, help="Comma-separated steps to score (default: all found).")
    args = parser.parse_args()
    wanted = {int(s) for s in args.steps.split(",")} if args.steps else None

    _, heldout, _ = load_training_data(SearchScriptArguments(), "one_shot")
    engine = make_engine(EngineSettings(engine="simulated", search_top_k=3))
    metrics = [row for row in read_metrics(args.run_dir / "metrics.jsonl") if "reward" in row]
    step_times = [row["step_time"] for row in metrics if row.get("step_time")]
    scores = {}
    for step, folder in checkpoints(args.run_dir):
        if wanted is not None and step not in wanted:
            continue
        result = evaluate(str(folder), {"heldout": heldout}, engine, prompt_style="one_shot", progress=False)
        overall = result.overall
        scores[step] = {k: overall[k] for k in ("n", "f1", "exact_match", "mean_searches", "well_formed", "answered")}
        scores[step]["seconds_per_question"] = overall["seconds_per_question"]
        print(step, scores[step], flush=True)
        write_partial(args, heldout, scores, metrics, step_times)  # a run cut short still leaves its scores


def write_partial(args, heldout, scores, metrics, step_times) -> None:
    write_result(
        args.name,
        {
            "run_dir": str(args.run_dir),
            "heldout_questions": len(heldout),
            "simulator": "embedded SmolLM2-135M-Instruct, prompt-only, noise 0, 3 documents",
            "decoding": "greedy",
            "scores_by_step": scores,
            "train_steps": len(metrics),
            "seconds_per_step": {
                "mean": statistics.fmean(step_times) if step_times else None,
                "median": statistics.median(step_times) if step_times else None,
            },
            "train_reward_by_step": {row["step"]: row["reward"] for row in metrics},
            "train_f1_by_step": {row["step"]: row.get("rewards/f1_reward/mean") for row in metrics},
            "train_searches_by_step": {row["step"]: row.get("search/searches_per_episode") for row in metrics},
        },
    )


if __name__ == "__main__":
    main()
