"""GRPO, REINFORCE and PPO side by side: the same short run of the main job, one after the other in one session.

    python benchmarks/bench_algorithms.py [--max-steps 3] [--algorithms grpo,reinforce,ppo] [--keep DIR] [--replot]
    python benchmarks/bench_algorithms.py --gpu [--max-steps 20] [--time-limit 400]
    python benchmarks/bench_algorithms.py --gpu --algorithms grpo --rollouts lockstep,scheduler --max-steps 4

``--rollouts lockstep,scheduler`` runs each algorithm once per rollout (``--continuous_batching false``: every
turn of every live episode generated together; the default: the episode scheduler) and reports the ratio of their
median seconds per step, side by side in one session.

Each run is ``zerosearch-trl train --algorithm A`` (embedded model, same warm start, same seed, same demo
questions) in its own process. By default it uses the CPU defaults and runs under ``/usr/bin/time -v`` for the peak
resident memory. ``--gpu`` uses one GPU with settings closer to the paper's (bf16, 16 completions per step in groups
of 8, five documents per search) and records the GPU memory in use, polled with ``nvidia-smi``, and the process's
own peak allocation. Reports seconds per optimisation step (from TRL's ``step_time``), the reward per step, and for
PPO the value loss and explained variance; draws the reward curves in one plot. A run that outlasts
``--time-limit`` is stopped and reported with the steps it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from common import RESULTS, write_result

from zerosearch_trl.training.logs import read_metrics

GPU_ARGS = [
    "--bf16", "true", "--per_device_train_batch_size", "16", "--num_generations", "8",
    "--search_top_k", "5", "--max_completion_length", "512",
]  # fmt: skip
"""Flags of ``--gpu`` runs: the paper's group size and top-k; bf16 as on any recent GPU."""


class GpuMemoryPoller:
    """The most GPU memory in use (MiB, all processes, allocator caches included) while the block runs, from
    ``nvidia-smi`` every second; ``None`` without it."""

    def __enter__(self) -> GpuMemoryPoller:
        self.peak_mib, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"]
        while not self._stop.wait(1.0):
            try:
                used = int(subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.split()[0])
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            self.peak_mib = max(self.peak_mib or 0, used)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


ROLLOUT_FLAGS = {"scheduler": [], "lockstep": ["--continuous_batching", "false"]}
"""How each ``--rollouts`` entry plays the episodes: the job's default, or every turn in lockstep."""


def run(algorithm: str, max_steps: int, out: Path, extra: list[str], time_limit: float | None) -> dict:
    command = [
        sys.executable, "-m", "zerosearch_trl.cli", "train",
        "--algorithm", algorithm, "--max_steps", str(max_steps), "--output_dir", str(out),
        "--probe_samples", "0", "--save_strategy", "no", *extra,
    ]  # fmt: skip
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    out.mkdir(parents=True, exist_ok=True)
    # Its own process group, so that a run past the time limit is stopped with all its children.
    with GpuMemoryPoller() as gpu, (out / "log.txt").open("w") as log:
        process = subprocess.Popen(timer + command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode, timed_out = process.wait(timeout=time_limit), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            returncode, timed_out = process.wait(), True
    output = (out / "log.txt").read_text(errors="replace")
    if returncode != 0 and not timed_out:
        raise RuntimeError(f"{algorithm} failed:\n{output[-3000:]}")
    rows = [r for r in read_metrics(out) if "reward" in r] if (out / "metrics.jsonl").exists() else []
    step_times = [r["step_time"] for r in rows if "step_time" in r]
    result = {
        "steps": len(rows),
        "timed_out": timed_out,
        "seconds_per_step_mean": round(statistics.mean(step_times), 1) if step_times else None,
        "seconds_per_step": [round(t, 1) for t in step_times],
        "reward": [round(r["reward"], 4) for r in rows],
        "searches_per_episode": [round(r.get("search/searches_per_episode", float("nan")), 3) for r in rows],
    }
    peak_rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", output)
    if peak_rss:
        result["peak_rss_gib"] = round(int(peak_rss.group(1)) / 2**20, 2)
    if gpu.peak_mib is not None:
        result["peak_gpu_memory_used_gib"] = round(gpu.peak_mib / 1024, 2)
    summary = out / "summary.json"
    if summary.exists():
        summary_data = json.loads(summary.read_text())
        result["wall_seconds"] = summary_data["seconds"]
        if "peak_gpu_memory_gib" in summary_data:
            result["peak_gpu_allocated_gib"] = summary_data["peak_gpu_memory_gib"]
        result["heldout"] = summary_data.get("heldout")
    if algorithm == "ppo":
        result["value_loss"] = [round(r["ppo/value_loss"], 4) for r in rows if "ppo/value_loss" in r]
        result["explained_variance"] = [round(r["ppo/explained_variance"], 4) for r in rows]
    return result


def plot(results: dict[str, dict], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    # distinct markers and dashes: same-seed runs can share a curve (GRPO and REINFORCE sample the same first episodes)
    styles = [("o", "-", 9), ("s", "--", 6), ("^", ":", 6)]
    for (algorithm, result), (marker, line, size) in zip(results.items(), styles * len(results)):
        steps = range(1, len(result["reward"]) + 1)
        axes.plot(steps, result["reward"], marker=marker, linestyle=line, markersize=size, label=algorithm)
        if len(steps) <= 12:
            axes.set_xticks(list(steps))
    axes.set_xlabel("optimisation step")
    axes.set_ylabel("mean reward (F1 + format)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


TITLES = {
    "algorithms": "Embedded model, CPU defaults: reward per step",
    "algorithms_gpu": "Embedded model, one GPU: reward per step",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="Steps per run (default: 3; 20 with --gpu).")
    parser.add_argument("--algorithms", default="grpo,reinforce,ppo")
    parser.add_argument("--gpu", action="store_true", help="GPU settings; writes results/algorithms_gpu.*.")
    parser.add_argument(
        "--rollouts", default="scheduler", help="Comma-separated, of scheduler, lockstep (side by side)."
    )
    parser.add_argument("--time-limit", type=float, default=None, help="Stop a run after this many seconds.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    parser.add_argument("--replot", action="store_true", help="Only redraw the plot from the results JSON.")
    args = parser.parse_args()
    name = "algorithms_gpu" if args.gpu else "algorithms"
    if args.replot:
        plot(json.loads((RESULTS / f"{name}.json").read_text())["runs"], RESULTS / f"{name}.png", TITLES[name])
        return
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU; without one, run the CPU comparison (no --gpu).")
    rollouts = args.rollouts.split(",")
    unknown = [r for r in rollouts if r not in ROLLOUT_FLAGS]
    if unknown:
        raise SystemExit(f"Unknown rollout(s) {unknown}: choose from {', '.join(ROLLOUT_FLAGS)}.")
    max_steps = args.max_steps or (20 if args.gpu else 3)
    extra = GPU_ARGS if args.gpu else []
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-algorithms-"))
    results = {}
    only_default = rollouts == ["scheduler"]  # the algorithm comparison: runs named by algorithm alone
    for algorithm in args.algorithms.split(","):
        for rollout in rollouts:
            label = algorithm if only_default else f"{algorithm} ({rollout})"
            folder = root / (algorithm if only_default else f"{algorithm}-{rollout}")
            results[label] = run(algorithm, max_steps, folder, [*extra, *ROLLOUT_FLAGS[rollout]], args.time_limit)
            print(label, json.dumps(results[label]), flush=True)
    title = TITLES[name]
    if not only_default:
        name += "_rollouts"  # its own file: the algorithm comparison's stays as it was
    plot(results, RESULTS / f"{name}.png", title)
    config = {"max_steps": max_steps, "flags": extra, "time_limit": args.time_limit, "rollouts": rollouts}
    write_result(name, {**config, "runs": results, "output_dir": str(root), **speedups(results, rollouts)})


def speedups(results: dict[str, dict], rollouts: list[str]) -> dict:
    """Per algorithm, lockstep's median seconds per step over the scheduler's (the first step, which also loads
    and compiles, left out where there are more)."""
    if set(rollouts) != {"lockstep", "scheduler"}:
        return {}

    def median_step(label: str) -> float | None:
        times = results[label]["seconds_per_step"]
        return statistics.median(times[1:] or times) if times else None

    ratios = {}
    for label in results:
        if label.endswith("(scheduler)"):
            algorithm = label.removesuffix(" (scheduler)")
            lockstep, scheduler = median_step(f"{algorithm} (lockstep)"), median_step(label)
            ratios[algorithm] = round(lockstep / scheduler, 2) if lockstep and scheduler else None
    return {"lockstep_over_scheduler_seconds_per_step": ratios}


if __name__ == "__main__":
    main()
