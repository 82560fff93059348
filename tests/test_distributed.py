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
RANK_SAFETY = Path(__file__).parent / "distributed" / "rank_safety.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(script: Path, *args: str) -> None:
    """``accelerate launch`` of ``script`` on two CPU processes (DDP over gloo); fails with their stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO_ROOT / "src")]),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), str(script), *args,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "reinforce", "ppo"])
def test_steps_with_search_rollout_on_two_processes(tmp_path, default_model_dir, algorithm):
    launch_two_processes(SCRIPT, str(tmp_path), algorithm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert all(r["changed"] > 0 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)  # DDP kept them in sync
    assert ranks[0]["critic_checksum"] == pytest.approx(ranks[1]["critic_checksum"], rel=0, abs=1e-9)
    # each process played its own episodes, with its own rows' questions
    assert all(r["queries"] and all(q == "Where is Alpha?" for b in r["queries"] for q in b) for r in ranks)
    logged = [e for e in ranks[0]["log_history"] if "reward" in e]
    assert len(logged) == 2 and all("search/searches_per_episode" in e for e in logged)


@pytest.mark.slow
def test_ranks_whose_episodes_end_at_different_turns_take_part_in_every_turn(tmp_path, default_model_dir):
    """#21.2 and #21.3: a process whose episodes are done keeps entering generation while another's are not (ZeRO-3
    and FSDP gather collectively there), and the search metrics are the mean over both processes' episodes."""
    launch_two_processes(RANK_SAFETY, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # What ran: DDP. (An FSDP accelerate config on CPU also trains with DDP: accelerate engages FSDP on GPUs only.)
    assert [r["wrapper"] for r in ranks] == ["DistributedDataParallel"] * 2 and not any(r["fsdp"] for r in ranks)
    assert {q for r in ranks for q in r["questions"]} == {"Where is Alpha?", "Where is Gamma?"}
    assert ranks[0]["generation_contexts"] == ranks[1]["generation_contexts"] == 2 * 3  # 3 turns in each step
    for rank in ranks:
        steps = [e for e in rank["log_history"] if "search/searches_per_episode" in e]
        assert len(steps) == 2
        # Alpha searches once, Gamma twice (its third search, in the answer turn, is not run): (1 + 1 + 2 + 2) / 4
        assert all(e["search/searches_per_episode"] == 1.5 for e in steps)
        assert all(e["search/well_formed_episodes"] == 0.5 for e in steps)  # Alpha answers, Gamma does not


@pytest.mark.slow
def test_each_ddp_process_generates_continuously_on_its_own(tmp_path, default_model_dir):
    """Under DDP every process holds every parameter: its episodes go through its own continuous-batching
    generator, with no collective per turn, and the step that follows keeps the processes in sync."""
    launch_two_processes(Path(__file__).parent / "distributed" / "continuous_step.py", str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["wrapper"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert all(len(r["decode_steps"]) == 1 and r["decode_steps"][0] > 0 and r["reused_tokens"][0] > 0 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=0, abs=1e-9)
    assert [e for e in ranks[0]["log_history"] if "search/searches_per_episode" in e]
