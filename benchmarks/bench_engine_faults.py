"""Engine faults in a real training run: the servers behind the engine fail while GRPO is in its rollouts.

    python benchmarks/bench_engine_faults.py [--steps 3] [--phases retrieval,simulator] [--seed 0]

Two phases, each a ``zerosearch-trl train`` run of the embedded model (its warm start on, so that it searches):

- ``retrieval``: ``--engine remote`` against our own ``serve`` (BM25 over the demo task's corpus);
- ``simulator``: ``--engine simulated`` against the embedded model served by ``transformers serve`` (OpenAI API).

Between the run and its server sits a fault-injecting proxy on loopback (``tests/helpers.FaultProxy``). Once the
run is in its RL steps, the proxy faults ``--fault-rate`` of the requests, the kinds in turn: ``down`` (the
connection dropped unanswered), ``slow`` (answered past the client's timeout), ``garbage`` (HTML instead of JSON),
``error`` (HTTP 500); and a controller stops the server process every ``--healthy`` seconds or so and starts it
again (``restart``; the requests meanwhile meet a 502). Reports, per phase: the requests that met each fault kind,
the restarts, whether the run finished all its steps, and the searches answered by a fallback
(``search/engine_failures``: a remote search answered by the failure notice; ``search/simulator_fallbacks``: a
simulated search answered by placeholders, which malformed simulator output also causes) out of all searches.
Writes ``results/reliability_engine_faults.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import FaultProxy  # noqa: E402  (the tests' proxy: one definition for both)
from zerosearch_trl.demo import make_demo_task  # noqa: E402
from zerosearch_trl.models import default_model_path  # noqa: E402
from zerosearch_trl.training.config import SearchScriptArguments  # noqa: E402
from zerosearch_trl.training.logs import read_metrics  # noqa: E402

KINDS = ("down", "slow", "garbage", "error", "restart")
TIMEOUT = {"retrieval": 5.0, "simulator": 60.0}  # the client's, per request: a healthy answer comes well within
EPISODES_PER_STEP = 4  # the job's CPU default: one question, four samples
HEALTH = {"retrieval": "/health", "simulator": "/v1/models"}


JOB = SearchScriptArguments()
"""The job's defaults: its demo world holds demo_questions + heldout_questions people (a world depends on its size)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """The real server of a phase, in its own process group, that the controller can stop and start again."""

    def __init__(self, phase: str, work: Path) -> None:
        self.phase, self.port, self.work = phase, free_port(), work
        self.url, self.process = f"http://127.0.0.1:{self.port}", None
        if phase == "retrieval":  # the demo task's own world, as the job's questions ask about it
            corpus = work / "corpus.jsonl"
            with corpus.open("w") as file:
                for row in make_demo_task(JOB.demo_questions + JOB.heldout_questions, seed=0).corpus:
                    file.write(json.dumps(row) + "\n")
            self.command = [sys.executable, "-m", "zerosearch_trl.cli", "serve", "--corpus", str(corpus),
                            "--port", str(self.port), "--top_k", "5"]  # fmt: skip
        else:
            executable = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
            self.command = [executable, "serve", str(default_model_path()), "--port", str(self.port),
                            "--host", "127.0.0.1"]  # fmt: skip

    def start(self) -> float:
        started = time.monotonic()
        log = open(self.work / f"{self.phase}-server.log", "a")  # noqa: SIM115 (the child writes to it)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)  # fmt: skip
        while time.monotonic() - started < 300:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[:4]} exited: see {log.name}")
            try:
                with urllib.request.urlopen(self.url + HEALTH[self.phase], timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.phase} server not healthy within 300 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Controller(threading.Thread):
    """Cycles the fault kinds over the proxy (and the upstream, for ``restart``) until stopped."""

    def __init__(
        self, proxy: FaultProxy, upstream: Upstream, rng: random.Random, healthy: float, faulty: float, after: Path
    ):
        super().__init__(daemon=True)
        self.proxy, self.upstream, self.rng, self.after = proxy, upstream, rng, after
        self.healthy, self.faulty = healthy, faulty
        self.restart_seconds: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        # Faults start once the warm start is saved: the run's start-up checks (health, first model list) may fail
        # fast by design; what is measured is a run already in its RL rollouts.
        while not self.after.exists():
            if self.halt.wait(1.0):
                return
        self.proxy.mode = "mixed"
        while not self.halt.wait(self.healthy * self.rng.uniform(0.5, 1.5)):
            self.proxy.mode = "restart"  # forwarded, to a server that is not there for a while
            self.upstream.stop()
            self.halt.wait(self.faulty)
            self.restart_seconds.append(round(self.upstream.start(), 1))
            self.proxy.mode = "mixed"


def train_command(phase: str, proxy_url: str, out: Path, steps: int) -> list[str]:
    engine = (
        ["--engine", "remote", "--search_url", f"{proxy_url}/retrieve"]
        if phase == "retrieval"
        else ["--engine", "simulated", "--simulator_base_url", f"{proxy_url}/v1"]
    )
    return [
        sys.executable, "-m", "zerosearch_trl.cli", "train", *engine,
        "--server_timeout", str(TIMEOUT[phase]), "--server_retries", "1",
        "--max_steps", str(steps), "--per_device_train_batch_size", str(EPISODES_PER_STEP),
        "--output_dir", str(out), "--save_strategy", "no", "--probe_samples", "0",
    ]  # fmt: skip


def phase_run(
    phase: str, work: Path, steps: int, rng: random.Random, healthy: float, faulty: float, fault_rate: float, seed: int
) -> dict:
    upstream = Upstream(phase, work)
    upstream.start()
    proxy = FaultProxy(upstream.url, slow_seconds=TIMEOUT[phase] + 5, fault_rate=fault_rate, seed=seed)
    out = work / phase
    controller = Controller(proxy, upstream, rng, healthy, faulty, after=out / "warm_start" / "model")
    started = time.monotonic()
    try:
        with (work / f"{phase}-train.log").open("w") as log:
            process = subprocess.Popen(train_command(phase, proxy.url, out, steps), stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
            controller.start()
            code = process.wait()
    finally:
        controller.halt.set()
        controller.join()
        proxy.close()
        upstream.stop()
    rows = [r for r in read_metrics(out) if "reward" in r] if (out / "metrics.jsonl").exists() else []
    episodes = [r.get("search/searches_per_episode", 0.0) for r in rows]
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return {
        "returncode": code,
        "steps_finished": len(rows),
        "steps_wanted": steps,
        "summary_steps": summary.get("steps"),
        "seconds": round(time.monotonic() - started, 1),
        "requests_faulted": {kind: proxy.counts[kind] for kind in KINDS},
        "requests_passed": proxy.counts["pass"],
        "searches": round(sum(r.get("search/searches_per_episode", 0.0) * EPISODES_PER_STEP for r in rows)),
        "restart_seconds": controller.restart_seconds,
        "searches_per_episode_by_step": episodes,
        "engine_failures": sum(r.get("search/engine_failures", 0.0) for r in rows),
        "simulator_fallbacks": sum(r.get("search/simulator_fallbacks", 0.0) for r in rows),
        "log_tail": (work / f"{phase}-train.log").read_text(errors="replace")[-1500:] if code else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--phases", default="retrieval,simulator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="reliability_engine_faults", help="results/<name>.json")
    parser.add_argument("--fault-rate", type=float, default=0.4, help="Share of requests that meet a fault.")
    parser.add_argument("--healthy", type=float, default=60.0, help="Mean seconds between restarts.")
    parser.add_argument("--faulty", type=float, default=8.0, help="Seconds the server stays down at a restart.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="zs-engine-faults-"))
    phases = {}
    for phase in args.phases.split(","):
        phases[phase] = phase_run(phase, work, args.steps, rng, args.healthy, args.faulty, args.fault_rate, args.seed)
        print(phase, json.dumps({k: v for k, v in phases[phase].items() if k != "log_tail"}), flush=True)
    write_result(
        args.name,
        {
            "settings": {
                "steps": args.steps,
                "seed": args.seed,
                "fault_rate": args.fault_rate,
                "seconds_between_restarts": args.healthy,
                "seconds_down_per_restart": args.faulty,
                "client_timeout": TIMEOUT,
                "client_retries": 1,
            },  # fmt: skip
            "runs_finished": sum(p["returncode"] == 0 and p["steps_finished"] == args.steps for p in phases.values()),
            "runs": len(phases),
            "phases": phases,
            "command": " ".join(["python", "benchmarks/bench_engine_faults.py", *sys.argv[1:]]),
            "work": str(work),
        },
    )


if __name__ == "__main__":
    main()
