import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_grpo_demo_example_trains_a_step_on_the_embedded_model(tmp_path, default_model_dir):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "grpo_demo.py"),
            "--steps",
            "1",
            "--questions",
            "4",
            "--num_generations",
            "2",
            "--max_completion_length",
            "96",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1
    (entry,) = summary["log"]
    assert {
        "loss",
        "rewards/f1_reward/mean",
        "search/searches_per_episode",
        "search/invalid_actions_per_episode",
    } <= set(entry)
    searches = entry["search/searches_per_episode"] * 2
    assert summary["simulator"]["requests"] == round(searches)  # every search the policy made reached the engine
