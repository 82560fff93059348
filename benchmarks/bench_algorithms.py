"""GRPO, REINFORCE and PPO side by side: the same short CPU run of the main job, one after the other in one session.

    python benchmarks/bench_algorithms.py [--max-steps 3] [--algorithms grpo,reinforce,ppo] [--keep DIR] [--replot]

Each run is ``zerosearch-trl train --algorithm A`` with the CPU defaults (embedded model, same warm start, same seed,
same demo questions), in its own process under ``/usr/bin/time -v`` for the peak resident memory. Reports seconds
per optimisation step (from TRL's ``step_time``), peak RSS, the reward per step, and for PPO the value loss and
explained variance; draws the reward curves in one plot (``results/algorithms.png``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, write_result

from zerosearch_trl.report import read_metrics


def run(algorithm: str, max_steps: int, out: Path) -> dict:
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "zerosearch_trl.cli", "train",
        "--algorithm", algorithm, "--max_steps", str(max_steps), "--output_dir", str(out),
        "--probe_samples", "0", "--save_strategy", "no",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{algorithm} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    rows = [r for r in read_metrics(out) if "reward" in r]
    step_times = [r["step_time"] for r in rows if "step_time" in r]
    result = {
        "steps": len(rows),
        "seconds_per_step_mean": round(statistics.mean(step_times), 1) if step_times else None,
        "seconds_per_step": [round(t, 1) for t in step_times],
        "peak_rss_gib": round(peak_kb / 2**20, 2),
        "reward": [round(r["reward"], 4) for r in rows],
        "searches_per_episode": [round(r.get("search/searches_per_episode", float("nan")), 3) for r in rows],
    }
    if algorithm == "ppo":
        result["value_loss"] = [round(r["ppo/value_loss"], 4) for r in rows if "ppo/value_loss" in r]
        result["explained_variance"] = [round(r["ppo/explained_variance"], 4) for r in rows]
    return result


def plot(results: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    # distinct markers and dashes: same-seed runs can share a curve (GRPO and REINFORCE sample the same first episodes)
    styles = [("o", "-", 9), ("s", "--", 6), ("^", ":", 6)]
    for (algorithm, result), (marker, line, size) in zip(results.items(), styles * len(results)):
        steps = range(1, len(result["reward"]) + 1)
        axes.plot(steps, result["reward"], marker=marker, linestyle=line, markersize=size, label=algorithm)
        axes.set_xticks(list(steps))
    axes.set_xlabel("optimisation step")
    axes.set_ylabel("mean reward (F1 + format)")
    axes.set_title("Embedded model, CPU defaults: reward per step")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--algorithms", default="grpo,reinforce,ppo")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    parser.add_argument("--replot", action="store_true", help="Only redraw the plot from results/algorithms.json.")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((RESULTS / "algorithms.json").read_text())["runs"], RESULTS / "algorithms.png")
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-algorithms-"))
    results = {name: run(name, args.max_steps, root / name) for name in args.algorithms.split(",")}
    plot(results, RESULTS / "algorithms.png")
    write_result("algorithms", {"max_steps": args.max_steps, "runs": results, "output_dir": str(root)})
    print(json.dumps({k: (v["seconds_per_step_mean"], v["peak_rss_gib"]) for k, v in results.items()}))


if __name__ == "__main__":
    main()
