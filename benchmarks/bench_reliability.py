"""Kill and resume, through the CLI: is anything lost or repeated when a run is killed at a random moment?

    python benchmarks/bench_reliability.py [--kills 8] [--steps 4] [--seed 0]

A reference run of ``zerosearch-trl train`` (a tiny random Llama over the embedded tokenizer, the simulated engine,
the noise curriculum, ``--save_steps 1``, a sqlite result cache) runs uninterrupted. Then each trial starts the same
run, SIGKILLs its process group at a random moment of its expected span (loading, a rollout, an optimiser step, a
checkpoint write), and resumes it with ``--resume_from_checkpoint latest`` (or starts it again when no checkpoint is
complete), until it finishes. A trial may be killed twice. Afterwards, each trial's output must hold: every step in
``metrics.jsonl`` exactly once; the curriculum's noise per step as in the reference; ``summary.json`` and
``report.md`` describing all the steps; a cache that opens and passes sqlite's integrity check. Writes
``results/reliability_kill_resume.json``. Each run takes tens of seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import make_tiny_model  # noqa: E402  (the tests' tiny model: one definition for both)
from zerosearch_trl.models import default_model_path, load_tokenizer  # noqa: E402
from zerosearch_trl.training.checkpoints import latest_checkpoint  # noqa: E402
from zerosearch_trl.training.logs import read_metrics  # noqa: E402


def train_command(model: Path, out: Path, steps: int, resume: bool) -> list[str]:
    return [
        sys.executable, "-m", "zerosearch_trl.cli", "train",
        "--model_name_or_path", str(model), "--output_dir", str(out),
        "--demo_questions", "8", "--heldout_questions", "4", "--probe_samples", "0",
        "--max_steps", str(steps), "--save_steps", "1",
        "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_turn_tokens", "16", "--max_observation_tokens", "16", "--max_completion_length", "81",
        "--simulator_max_new_tokens", "24", "--search_top_k", "2",
        "--schedule", "linear", "--noise_end", "0.5",
        "--cache_path", str(out / "cache.sqlite"),
        *(["--resume_from_checkpoint", "latest"] if resume else []),
    ]  # fmt: skip


def start(model: Path, out: Path, steps: int, log: Path) -> subprocess.Popen:
    resume = latest_checkpoint(out) is not None
    handle = open(log, "a")  # noqa: SIM115 (the child writes to it until it ends)
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"}
    return subprocess.Popen(
        train_command(model, out, steps, resume), stdout=handle, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # its own process group: the kill reaches every child
    )  # fmt: skip


def kill_state(out: Path) -> dict:
    """What the kill left: complete checkpoints, and any half-written one (no trainer_state.json)."""
    folders = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return {
        "complete_checkpoints": [p.name for p in folders if (p / "trainer_state.json").is_file()],
        "half_written_checkpoints": [p.name for p in folders if not (p / "trainer_state.json").is_file()],
        "metrics_lines": len((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").exists()
        else 0,
    }  # fmt: skip


def check(out: Path, steps: int, reference: list[dict]) -> dict:
    rows = [r for r in read_metrics(out) if "reward" in r]
    logged = [r["step"] for r in rows]
    noise = {r["step"]: r.get("curriculum/noise_p") for r in rows}
    expected_noise = {r["step"]: r.get("curriculum/noise_p") for r in reference}
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    report = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    with sqlite3.connect(out / "cache.sqlite") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    return {
        "steps_logged": logged,
        "steps_lost": sorted(set(range(1, steps + 1)) - set(logged)),
        "steps_duplicated": sorted({s for s in logged if logged.count(s) > 1}),
        "noise_as_uninterrupted": noise == expected_noise,
        "summary_steps": summary.get("steps"),
        "report_covers_every_step": f"up to step {steps}" in report,
        "cache_integrity": integrity,
    }


def trial(model: Path, out: Path, steps: int, span: float, rng: random.Random, max_kills: int, log: Path) -> dict:
    """Start the run and kill it (up to ``max_kills`` times, each at a random moment), then let it finish."""
    kills = []
    for _ in range(max_kills):
        process = start(model, out, steps, log)
        delay = rng.uniform(0.05, 1.0) * span
        try:
            code = process.wait(timeout=delay)  # it finished before the kill was due
            return {"kills": kills, "resumes": 0, **({"error": log.read_text()[-2000:]} if code else {})}
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            kills.append({"after_seconds": round(delay, 1), **kill_state(out)})
    code = start(model, out, steps, log).wait(timeout=900)  # from the newest complete checkpoint, or afresh
    return {"kills": kills, "resumes": 1, **({"error": log.read_text()[-2000:]} if code else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=8, help="trials, each killed at least once")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="zs-reliability-"))
    tokenizer = load_tokenizer(default_model_path())
    model = work / "tiny"
    make_tiny_model(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)

    started = time.perf_counter()
    reference_out = work / "reference"
    assert start(model, reference_out, args.steps, work / "reference.log").wait(timeout=900) == 0, (
        work / "reference.log"
    ).read_text()[-3000:]
    span = time.perf_counter() - started
    reference = [r for r in read_metrics(reference_out) if "reward" in r]

    trials = []
    for index in range(args.kills):
        out = work / f"trial{index}"
        outcome = trial(model, out, args.steps, span, rng, max_kills=2 if index % 2 else 1, log=work / f"{index}.log")
        if "error" not in outcome:
            outcome.update(check(out, args.steps, reference))
        trials.append(outcome)
        print(json.dumps({"trial": index, **{k: v for k, v in outcome.items() if k != "error"}}), flush=True)

    killed = [t for t in trials if t["kills"]]
    write_result("reliability_kill_resume", {
        "settings": {"steps": args.steps, "trials": args.kills, "seed": args.seed,
                     "uninterrupted_run_seconds": round(span, 1)},
        "kills_tried": sum(len(t["kills"]) for t in trials),
        "trials_killed": len(killed),
        "runs_completed": sum("error" not in t for t in trials),
        "kills_during_a_checkpoint_write": sum(bool(k["half_written_checkpoints"]) for t in trials for k in t["kills"]),
        "steps_lost": sum(len(t.get("steps_lost", [])) for t in trials),
        "steps_duplicated": sum(len(t.get("steps_duplicated", [])) for t in trials),
        "noise_schedule_mismatches": sum(not t.get("noise_as_uninterrupted", False) for t in trials),
        "caches_failing_integrity": sum(t.get("cache_integrity") != "ok" for t in trials),
        "trials": trials,
    })  # fmt: skip


if __name__ == "__main__":
    main()
