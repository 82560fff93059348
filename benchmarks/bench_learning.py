"""Does it learn? The paper's claims in miniature on the demo world, with seeds: a grid of short training runs, each
scored greedily on the same held-out questions against a real engine (BM25 over the demo corpus) and the
noise-free simulator, at the start (after the warm start) and the end.

    python benchmarks/bench_learning.py [--groups sim_to_real] [--seeds 0,1] [--steps 10] [--root runs/learning]
    python benchmarks/bench_learning.py --replot    # or --table: the README's markdown table
    python benchmarks/bench_learning.py --groups curriculum --collect    # record finished runs, train none

Groups, in the order of the issue's priorities (each shares the baseline run, ``simulator``: the default job,
trained against the embedded simulator with the paper's exponential curriculum, F1 + format rewards, GRPO):

- ``sim_to_real``: ``simulator`` vs ``bm25`` (trained against BM25 itself, Search-R1's way);
- ``curriculum``: vs ``fixed_noise`` (p = 0.25 throughout) and ``no_noise``;
- ``rewards``: vs ``f1_only`` (the paper) and ``f1_small_format`` (format weighted 0.1);
- ``loss_mask``: vs ``unmasked`` (the observations trained on too);
- ``algorithms``: vs ``reinforce`` and ``ppo``.

Each run is ``zerosearch-trl train`` in its own process (embedded model, warm start, demo task: 256 training and
32 held-out questions), one after the other. The grid resumes: a run that ``results/learning.json`` records (same
steps and flags) or whose ``summary.json`` records all its steps is read back, not rerun; an unfinished one is
started again from scratch (its scores at step 0 exist only in the
run's memory until it ends). ``results/learning.json`` is rewritten after each run, and ``learning.png`` draws the
change of held-out F1 (end - start) per condition, each seed a dot, against BM25 and against the simulator.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, write_result

from zerosearch_trl.training.logs import read_metrics

CONDITIONS: dict[str, list[str]] = {
    "simulator": [],
    "bm25": ["--engine", "bm25"],
    "fixed_noise": ["--schedule", "constant", "--noise_start", "0.25"],
    "no_noise": ["--schedule", "constant", "--noise_start", "0.0"],
    "f1_only": ["--rewards", "f1"],
    "f1_small_format": ["--rewards", "f1", "format", "--reward_weights", "1.0", "0.1"],
    "unmasked": ["--mask_observations", "false"],
    "reinforce": ["--algorithm", "reinforce"],
    "ppo": ["--algorithm", "ppo"],
}
"""Each condition's flags on top of the default job."""

GROUPS: dict[str, list[str]] = {
    "sim_to_real": ["simulator", "bm25"],
    "curriculum": ["simulator", "fixed_noise", "no_noise"],
    "rewards": ["simulator", "f1_only", "f1_small_format"],
    "loss_mask": ["simulator", "unmasked"],
    "algorithms": ["simulator", "reinforce", "ppo"],
}
LABELS: dict[str, str] = {
    "simulator": "simulator, curriculum on (the default job)",
    "bm25": "BM25 itself (Search-R1's way)",
    "fixed_noise": "simulator, fixed noise p = 0.25",
    "no_noise": "simulator, no noise",
    "f1_only": "reward: F1 alone (the paper's)",
    "f1_small_format": "reward: F1 + 0.1 x format",
    "unmasked": "observations not masked",
    "reinforce": "REINFORCE",
    "ppo": "PPO",
}
"""What each condition is, in the README's table (the plot names them by key); the default job is GRPO, F1 + format
(1:1), observations masked."""
TRAIN_WINDOW = 3
"""Training curves are compared over their first and last this many steps (a single step is 4 episodes)."""
YARDSTICK, UPPER_BOUND = "bm25", "simulator_told_answer"
METRICS = ("f1", "exact_match", "mean_searches", "well_formed")
NAME = "learning"


def recorded_runs(steps: int) -> dict[str, dict[str, dict]]:
    """The runs ``results/learning.json`` already holds, when they were made with the same flags and steps."""
    path = RESULTS / f"{NAME}.json"
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text())
    if recorded.get("steps") != steps:
        return {}
    return {
        condition: seeds
        for condition, seeds in recorded.get("runs", {}).items()
        if recorded.get("flags", {}).get(condition) == CONDITIONS.get(condition)
    }


def run_flags(condition: str, seed: int, steps: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "zerosearch_trl.cli", "train", *CONDITIONS[condition],
        "--max_steps", str(steps), "--seed", str(seed), "--output_dir", str(out),
        "--heldout_eval", "true", "--heldout_engines", f"{YARDSTICK},simulated",
        "--save_strategy", "no", "--probe_samples", "0",
    ]  # fmt: skip


def finished(out: Path, steps: int) -> dict | None:
    summary = out / "summary.json"
    if not summary.is_file():
        return None
    data = json.loads(summary.read_text())
    return data if data.get("steps") == steps and data.get("heldout_by_engine") else None


def train(condition: str, seed: int, steps: int, out: Path) -> dict:
    """The run's summary: read back when it finished earlier, else (re)run from scratch."""
    summary = finished(out, steps)
    if summary is not None:
        return summary
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    with (out / "log.txt").open("w") as log:
        code = subprocess.run(run_flags(condition, seed, steps, out), stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = (out / "log.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{condition} seed {seed} failed ({code}) after {time.monotonic() - started:.0f} s:\n{tail}")
    summary = finished(out, steps)
    if summary is None:
        raise RuntimeError(f"{condition} seed {seed} ended without all {steps} steps: see {out / 'log.txt'}")
    return summary


def run_record(summary: dict, out: Path) -> dict:
    """One run's held-out scores (first and last evaluation, per engine) and its training curves."""
    rows = [row for row in read_metrics(out) if "reward" in row]
    scores = {}
    for engine, by_step in summary["heldout_by_engine"].items():
        steps = sorted(by_step, key=int)
        scores[engine] = {
            "start": {k: by_step[steps[0]].get(k) for k in METRICS},
            "end": {k: by_step[steps[-1]].get(k) for k in METRICS},
            "n": by_step[steps[-1]].get("n"),
        }
    return {
        "heldout": scores,
        "seconds": summary["seconds"],
        "train_reward": [round(row["reward"], 4) for row in rows],
        "train_searches_per_episode": [row.get("search/searches_per_episode") for row in rows],
        "train_episodes_with_search": [row.get("search/episodes_with_search") for row in rows],
        "train_f1": [row.get("rewards/f1_reward/mean") for row in rows],
    }


def aggregate(runs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per condition and engine: each metric's mean, min and max over seeds, at the start and the end, and the
    change (end - start) of F1 per seed."""
    table: dict[str, dict] = {}
    for condition, seeds in runs.items():
        engines = next(iter(seeds.values()))["heldout"].keys()
        table[condition] = {"seeds": sorted(int(s) for s in seeds)}
        for engine in engines:
            cell = {}
            for moment in ("start", "end"):
                for metric in METRICS:
                    values = [r["heldout"][engine][moment][metric] for r in seeds.values()]
                    values = [v for v in values if v is not None]
                    if values:
                        cell[f"{metric}_{moment}"] = {
                            "mean": round(statistics.fmean(values), 4),
                            "min": round(min(values), 4),
                            "max": round(max(values), 4),
                        }
            cell["f1_change_per_seed"] = [
                round(r["heldout"][engine]["end"]["f1"] - r["heldout"][engine]["start"]["f1"], 4)
                for r in seeds.values()
            ]
            table[condition][engine] = cell
        for curve in ("train_episodes_with_search", "train_f1"):
            table[condition][curve] = {
                moment: round(statistics.fmean(statistics.fmean(window(r[curve], moment)) for r in seeds.values()), 4)
                for moment in ("start", "end")
            }
    return table


def window(curve: list[float | None], moment: str) -> list[float]:
    """The first or last :data:`TRAIN_WINDOW` logged values of a training curve."""
    values = [v for v in curve if v is not None]
    return values[:TRAIN_WINDOW] if moment == "start" else values[-TRAIN_WINDOW:]


def plot(runs: dict[str, dict[str, dict]], path: Path) -> None:
    """Per condition, the change of held-out F1 (end - start) in each seed, a dot each, and their mean, a bar:
    against BM25 on the left, against the simulator (told the answers) on the right."""
    from matplotlib.figure import Figure

    conditions = [c for c in CONDITIONS if c in runs]
    figure = Figure(figsize=(9, 4), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)  # one scale: the two engines side by side
    for axes, engine, title in (
        (panels[0], YARDSTICK, "against BM25 (the real engine)"),
        (panels[1], UPPER_BOUND, "against the simulator (upper bound)"),
    ):
        for x, condition in enumerate(conditions):
            changes = [
                r["heldout"][engine]["end"]["f1"] - r["heldout"][engine]["start"]["f1"]
                for r in runs[condition].values()
                if engine in r["heldout"]
            ]
            if changes:
                axes.bar(x, statistics.fmean(changes), width=0.6, color=f"C{x}", alpha=0.35)
                axes.scatter([x] * len(changes), changes, color=f"C{x}", zorder=3)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
    panels[0].set_ylabel("held-out F1 change, end - start (greedy)")
    figure.suptitle("What 10 RL steps changed: each dot one seed, each bar their mean")
    figure.savefig(path, dpi=120)


def markdown_table(table: dict[str, dict]) -> str:
    """One line per condition: held-out F1 against BM25 (start -> end, mean over seeds, with the range of the end
    values) and its change in each seed, EM, searches per question and the well-formed share, and F1 against the
    simulator."""

    def cell(scores: dict, metric: str) -> str:
        start, end = scores[f"{metric}_start"], scores[f"{metric}_end"]
        spread = f" ({end['min']:.2f}-{end['max']:.2f})" if end["min"] != end["max"] else ""
        return f"{start['mean']:.2f} -> {end['mean']:.2f}{spread}"

    def curve(row: dict, name: str) -> str:
        return f"{row[name]['start']:.2f} -> {row[name]['end']:.2f}" if name in row else "-"

    lines = [
        "| trained against / with | seeds | F1 vs BM25 | its change, per seed | EM vs BM25 | searches per question | "
        "well-formed | F1 vs simulator (told the answers) | training: episodes that search | training: F1 reward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for condition, row in table.items():
        real, upper = row[YARDSTICK], row.get(UPPER_BOUND)
        lines.append(
            f"| `{condition}`: {LABELS.get(condition, condition)} | {len(row['seeds'])} | {cell(real, 'f1')} | "
            f"{', '.join(f'{change:+.2f}' for change in real['f1_change_per_seed'])} | {cell(real, 'exact_match')} | "
            f"{cell(real, 'mean_searches')} | {cell(real, 'well_formed')} | {cell(upper, 'f1') if upper else '-'} | "
            f"{curve(row, 'train_episodes_with_search')} | {curve(row, 'train_f1')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="sim_to_real", help=f"Comma-separated, of {', '.join(GROUPS)}.")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument(
        "--steps", type=int, default=10, help="RL steps per run (4 episodes each: one question, 4 samples)."
    )
    parser.add_argument("--root", type=Path, default=Path("runs/learning"), help="Where the runs live (resumable).")
    parser.add_argument(
        "--collect", action="store_true", help="Only record the runs that finished under --root; train none."
    )
    parser.add_argument("--replot", action="store_true", help="Only redraw the plot from the results JSON.")
    parser.add_argument("--table", action="store_true", help="Only print the results JSON as a markdown table.")
    args = parser.parse_args()
    if args.replot or args.table:
        recorded = json.loads((RESULTS / f"{NAME}.json").read_text())
        if args.replot:
            plot(recorded["runs"], RESULTS / f"{NAME}.png")
        else:
            print(markdown_table(aggregate(recorded["runs"])))
        return
    unknown = [g for g in args.groups.split(",") if g not in GROUPS]
    if unknown:
        raise SystemExit(f"Unknown group(s) {unknown}: choose from {', '.join(GROUPS)}.")
    conditions = list(dict.fromkeys(c for g in args.groups.split(",") for c in GROUPS[g]))
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = recorded_runs(args.steps)
    # Seed-major: a grid cut short still holds every condition of the first seeds.
    for seed in seeds:
        for condition in conditions:
            if str(seed) in runs.get(condition, {}):
                continue  # recorded in the results JSON (its run folder may be on another machine)
            out = args.root / condition / f"seed{seed}"
            if args.collect and finished(out, args.steps) is None:
                continue
            summary = train(condition, seed, args.steps, out)
            runs.setdefault(condition, {})[str(seed)] = run_record(summary, out)
            print(condition, seed, json.dumps(runs[condition][str(seed)]["heldout"]), flush=True)
            plot(runs, RESULTS / f"{NAME}.png")
            write_result(
                NAME,
                {
                    "groups": sorted(g for g, members in GROUPS.items() if set(members) <= set(runs)),
                    "steps": args.steps,
                    "seeds": sorted({int(s) for seeds_run in runs.values() for s in seeds_run}),
                    "flags": {c: CONDITIONS[c] for c in runs},  # every recorded run's, so that all resume
                    "yardstick": "BM25 over the demo task's corpus; the simulator (noise 0) is told the answers",
                    "table": aggregate(runs),
                    "runs": runs,
                    "root": str(args.root),
                },
            )


if __name__ == "__main__":
    main()
