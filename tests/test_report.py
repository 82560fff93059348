"""The run report: metrics.jsonl from a real trainer's logs, then report.md with real PNG plots."""

from __future__ import annotations

import json
import math
import sys

import pytest
from transformers import TrainerControl, TrainerState

from zerosearch_trl.training.logs import MetricsJsonlCallback, read_metrics
from zerosearch_trl.training.report import summary_lines, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def grpo_rows(steps: int = 6, *, noise: bool = False) -> list[dict]:
    """Log rows shaped like GRPOTrainer's (plus the search rollout's), then the trainer's end-of-training row."""
    rows = []
    for step in range(1, steps + 1):
        row = {
            "loss": 0.01 * step,
            "grad_norm": 1.5,
            "learning_rate": 1e-6,
            "num_tokens": 512.0 * step,
            "completions/mean_length": 100.0 + 10 * step,
            "completions/clipped_ratio": 0.5,
            "rewards/f1_reward/mean": 0.1 * step,
            "rewards/f1_reward/std": 0.2,
            "rewards/format_reward/mean": 0.5,
            "reward": 0.1 * step + 0.5,
            "reward_std": 0.3,
            "frac_reward_zero_std": 0.0,
            "kl": 0.001 * step,
            "entropy": 2.0 - 0.1 * step,
            "search/searches_per_episode": 0.25 * step,
            "search/episodes_with_search": min(1.0, 0.2 * step),
            "search/invalid_actions_per_episode": 0.0,
            "search/noisy_fraction": 0.0,
            "step_time": 3.0,
            "epoch": step / steps,
            "step": step,
        }
        if noise:
            row["curriculum/noise_p"] = 0.1 * (step - 1)
        rows.append(row)
    rows.append({"train_runtime": 125.0, "train_loss": 0.03, "epoch": 1.0, "step": steps})
    return rows


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))  # a drawn plot, not an empty canvas
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (350, 700)  # figsize (7, 3.5) at 100 dpi


def log(callback, step, logs, state=None):
    state = state or TrainerState()
    state.global_step = step
    callback.on_log(None, state, TrainerControl(), logs=logs)


def strict_json(line):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant} in {line!r}")

    return json.loads(line, parse_constant=refuse)


def test_report_has_summary_plots_skips_and_details(tmp_path):
    rows = grpo_rows()
    extra = {"model": "SmolLM2-135M", "well-formed share at step 0 / at the end": "0.12 / 0.91", "config": {"lr": 1e-6}}
    report = write_report(tmp_path, rows, title="Demo run", extra=extra, events=[])

    assert report == tmp_path / "report.md"
    text = report.read_text()
    assert text.startswith("# Demo run\n")
    assert "7 log rows up to step 6, run time 2m 05s." in text
    # first, last, min, max, rows logged, non-finite
    assert "| `reward` | 0.6 | 1.1 | 0.6 | 1.1 | 6 | 0 |" in text
    assert "| `rewards/f1_reward/mean` | 0.1 | 0.6 | 0.1 | 0.6 | 6 | 0 |" in text
    assert "| `search/searches_per_episode` | 0.25 | 1.5 | 0.25 | 1.5 | 6 | 0 |" in text
    assert "| `entropy` | 1.9 | 1.4 | 1.4 | 1.9 | 6 | 0 |" in text
    assert "| `learning_rate` |" not in text  # not a key metric
    # the summary lists the reward first, then per-function rewards
    assert text.index("| `reward` |") < text.index("| `rewards/f1_reward/mean` |") < text.index("| `kl` |")

    drawn = {"reward", "searches", "kl", "entropy", "completion_length"}
    assert {p.stem for p in (tmp_path / "plots").iterdir()} == drawn
    for name in drawn:
        assert f"](plots/{name}.png)" in text
        assert_png(tmp_path / "plots" / f"{name}.png")
    assert "noise_p.png" not in text
    assert "Skipped (never logged): Noise probability p (curriculum) (`curriculum/noise_p`)." in text

    assert "## Training guards\n\nNo guard fired." in text
    assert "| well-formed share at step 0 / at the end | 0.12 / 0.91 |" in text
    assert '| config | {"lr": 1e-06} |' in text


def test_report_plots_noise_p_when_logged_and_lists_guard_events(tmp_path):
    text = write_report(tmp_path, grpo_rows(noise=True), events=["Step 4: `reward` is nan. Check | this"]).read_text()
    assert "](plots/noise_p.png)" in text and "Skipped" not in text
    assert_png(tmp_path / "plots" / "noise_p.png")
    assert "- Step 4: `reward` is nan. Check \\| this" in text  # a pipe would break the markdown


def test_callback_writes_one_strict_json_line_per_log_and_nulls_non_finite(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    callback = MetricsJsonlCallback(path)
    log(callback, 1, {"reward": 0.5, "loss": 0.1})
    assert path.read_text().count("\n") == 1  # on disk at once, not when training ends
    log(callback, 2, {"reward": float("nan"), "kl": float("inf"), "entropy": -math.inf, "loss": 0.2})
    log(callback, 3, {"reward": None, "loss": 0.3})  # TRL logs None when a step's rewards were all NaN

    lines = path.read_text().splitlines()
    assert [strict_json(line) for line in lines] == [
        {"step": 1, "reward": 0.5, "loss": 0.1},
        {"step": 2, "reward": None, "kl": None, "entropy": None, "loss": 0.2},
        {"step": 3, "reward": None, "loss": 0.3},
    ]

    text = write_report(path.parent, plots=False).read_text()
    assert "| `reward` | 0.5 | 0.5 | 0.5 | 0.5 | 3 | 2 |" in text
    assert "| `kl` | – | – | – | – | 1 | 1 |" in text


def test_callback_writes_numpy_and_torch_scalars_as_numbers(tmp_path):
    import numpy as np
    import torch

    callback = MetricsJsonlCallback(tmp_path / "metrics.jsonl")
    log(callback, 1, {"a": np.float32(0.5), "b": torch.tensor(2.0), "c": np.float64("nan")})
    assert read_metrics(tmp_path) == [{"step": 1, "a": 0.5, "b": 2.0, "c": None}]


def test_callback_starts_fresh_or_keeps_history_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    callback = MetricsJsonlCallback(path)
    for step in range(1, 6):
        log(callback, step, {"reward": float(step)})

    callback.on_train_begin(None, TrainerState(global_step=3), TrainerControl())  # resumed from checkpoint-3
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]
    callback.on_train_begin(None, TrainerState(global_step=0), TrainerControl())  # a fresh run in the same folder
    assert path.read_text() == ""


def test_callback_writes_on_the_main_process_only(tmp_path):
    callback = MetricsJsonlCallback(tmp_path / "metrics.jsonl")
    log(callback, 1, {"reward": 1.0}, state=TrainerState(is_world_process_zero=False))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_read_metrics_skips_a_partial_last_line_but_not_a_corrupt_middle_one(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward": 0.1}\n{"step": 2, "rew')
    assert read_metrics(path) == [{"step": 1, "reward": 0.1}]
    assert "partial last line" in caplog.text
    path.write_text('{"step": 1, "rew\n{"step": 2, "reward": 0.1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1 is not valid JSON"):
        read_metrics(path)


def test_report_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MetricsJsonlCallback"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="row 0 has no 'step'"):
        write_report(tmp_path, [{"reward": 1.0}], plots=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        write_report(tmp_path, grpo_rows())
    assert not (tmp_path / "report.md").exists()  # failed before writing anything
    assert "## Plots" not in write_report(tmp_path, grpo_rows(), plots=False).read_text()


def test_report_with_no_plottable_metric_draws_nothing(tmp_path):
    text = write_report(tmp_path, [{"step": 1, "loss": 0.5}]).read_text()
    assert "| `loss` | 0.5 | 0.5 |" in text
    assert not (tmp_path / "plots").exists()
    for title in ("Reward", "Searches per episode", "Noise probability p", "KL divergence", "Entropy", "completion"):
        assert title in text.split("Skipped (never logged):")[1]


def test_summary_lines(tmp_path):
    lines = summary_lines(grpo_rows(noise=True))
    assert lines == [
        "Run summary: 6 steps in 2m 05s",
        "  reward                 0.6 -> 1.1  (min 0.6, max 1.1)",
        "  searches per episode   0.25 -> 1.5  (min 0.25, max 1.5)",
        "  noise p                0 -> 0.5  (min 0, max 0.5)",
    ]
    (tmp_path / "metrics.jsonl").write_text('{"step": 4, "reward": null}\n')  # a run killed before it ended
    assert summary_lines(tmp_path) == [
        "Run summary: 4 steps (no run time logged)",
        "  reward                 not logged",
        "  searches per episode   not logged",
        "  noise p                not logged",
    ]


@pytest.mark.slow
def test_real_grpo_run_writes_one_line_per_logged_step(tmp_path, tokenizer):
    from helpers import tiny_grpo_trainer
    from zerosearch_trl.training.guards import TrainingGuardCallback

    def length_reward(completions, **kwargs):
        return [len(completion) / 10 for completion in completions]

    guard = TrainingGuardCallback(patience=1)  # warn mode: fires on the tiny model's truncated completions
    trainer = tiny_grpo_trainer(
        tokenizer, tmp_path, [length_reward], [MetricsJsonlCallback(tmp_path / "metrics.jsonl"), guard]
    )
    trainer.train()

    rows = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps, final = rows[:-1], rows[-1]
    assert [row["step"] for row in steps] == [1, 2]
    for row in steps:
        expected = {"loss", "reward", "reward_std", "rewards/length_reward/mean", "entropy", "learning_rate", "epoch"}
        assert expected | {"completions/mean_length", "completions/clipped_ratio"} <= row.keys()
    assert final["step"] == 2 and "train_runtime" in final
    assert trainer.state.global_step == 2  # warn mode never stops

    report = write_report(tmp_path, events=guard.events).read_text()
    assert "| `rewards/length_reward/mean` |" in report
    assert_png(tmp_path / "plots" / "reward.png")
    assert [event.guard for event in guard.events] == ["all_truncated"]  # 8 random tokens never reach EOS
    assert "- Step 1: `completions/clipped_ratio` is 1" in report
    assert summary_lines(tmp_path)[0].startswith("Run summary: 2 steps in ")


def test_report_tabulates_and_plots_heldout_scores_per_engine(tmp_path):
    heldout = {
        "bm25": {"0": {"f1": 0.25, "exact_match": 0.2, "mean_searches": 1.0, "well_formed": 0.9}, "4": {"f1": 0.5}},
        "simulator_told_answer": {"0": {"f1": 0.4}, "4": {"f1": float("nan")}},
    }
    report = write_report(tmp_path, [{"step": 1, "reward": 0.1}], heldout=heldout).read_text()
    assert "| bm25 | 0 | 0.25 | 0.2 | 1 | 0.9 |" in report
    assert "| bm25 | 4 | 0.5 | – | – | – |" in report
    assert "| simulator_told_answer | 4 | nan |" in report
    assert "![Held-out F1 per engine](plots/heldout_f1.png)" in report
    assert (tmp_path / "plots" / "heldout_f1.png").stat().st_size > 0
    markdown_only = write_report(tmp_path / "bare", [{"step": 1}], heldout=heldout, plots=False).read_text()
    assert "| bm25 | 4 | 0.5 |" in markdown_only and "heldout_f1.png" not in markdown_only
