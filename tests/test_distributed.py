"""The search rollout under ``accelerate launch --num_processes 2`` on CPU: real processes, real DDP over gloo.

accelerate's ``--cpu`` flag picks its single-process launcher; ``--multi_gpu`` picks torchrun, and the script's
``use_cpu=True`` then makes the process group a CPU (gloo) one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = Path(__file__).parent / "distributed" / "search_step.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "reinforce", "ppo"])
def test_steps_with_search_rollout_on_two_processes(tmp_path, default_model_dir, algorithm):
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), str(SCRIPT), str(tmp_path), algorithm,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert all(r["changed"] > 0 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)  # DDP kept them in sync
    assert ranks[0]["critic_checksum"] == pytest.approx(ranks[1]["critic_checksum"], rel=0, abs=1e-9)
    # each process played its own episodes, with its own rows' questions
    assert all(r["queries"] and all(q == "Where is Alpha?" for b in r["queries"] for q in b) for r in ranks)
    logged = [e for e in ranks[0]["log_history"] if "reward" in e]
    assert len(logged) == 2 and all("search/searches_per_episode" in e for e in logged)
