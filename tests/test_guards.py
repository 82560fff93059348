"""Training guards, driven with real TrainerState/TrainerControl objects and by a real GRPOTrainer run."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import TrainerControl, TrainerState

from zerosearch_trl.training.guards import GuardEvent, TrainingGuardCallback, all_finite

ALL_OFF = {"nan_reward": "off", "collapse": "off", "tool_skip": "off", "all_truncated": "off", "nonfinite_grad": "off"}


def guard_with(patience: int = 5, collapse_threshold: float = 0.0, **modes: str) -> TrainingGuardCallback:
    """Every guard off but the given ones, so that a test sees only the guard it is about."""
    return TrainingGuardCallback(**{**ALL_OFF, **modes}, patience=patience, collapse_threshold=collapse_threshold)


def drive(guard: TrainingGuardCallback, series: list[dict], first_step: int = 1) -> list[int]:
    """Logs one row per step, as the Trainer does; returns the steps at which the guard asked to stop."""
    state = TrainerState()
    stops = []
    for step, logs in enumerate(series, start=first_step):
        state.global_step = step
        control = guard.on_log(None, state, TrainerControl(), logs=logs)
        if control.should_training_stop:
            stops.append(step)
    return stops


def test_nan_reward_warns_with_metric_value_step_and_advice(caplog):
    guard = guard_with(nan_reward="warn")
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.training.guards"):
        stops = drive(guard, [{"reward": 0.5}, {"reward": float("nan")}, {"reward": float("nan")}, {"reward": 0.4}])
    assert stops == []
    assert len(guard.events) == 1  # one event for a streak of NaN steps, not one per step
    event = guard.events[0]
    assert (event.guard, event.step, event.metric, event.action) == ("nan_reward", 2, "reward", "warn")
    assert event.value != event.value  # NaN
    [record] = caplog.records
    assert "Step 2" in record.getMessage() and "`reward` is nan" in record.getMessage()
    assert "reward functions" in record.getMessage()  # says what to try


@pytest.mark.parametrize("value", [float("inf"), None, "n/a"], ids=["inf", "null", "not-a-number"])
def test_nan_reward_stop_also_catches_inf_and_null(value, caplog):
    guard = guard_with(nan_reward="stop")
    assert drive(guard, [{"reward": 0.5}, {"reward": value}]) == [2]
    assert guard.events[0].action == "stop"
    assert "Stopping training" in caplog.text


def test_rows_without_the_metric_leave_the_guards_alone():
    # The trainer's end-of-training row and eval rows carry no `reward`: neither NaN nor a break in a streak.
    guard = guard_with(nan_reward="stop", tool_skip="stop", patience=2)
    rows = [{"search/episodes_with_search": 0.0}, {"train_runtime": 3.0}, {"eval_reward": 0.1}]
    assert drive(guard, rows + [{"search/episodes_with_search": 0.0}]) == [4]
    assert [event.guard for event in guard.events] == ["tool_skip"]


def test_collapse_fires_after_patience_steps_at_or_below_threshold_once_the_reward_was_above():
    guard = guard_with(collapse="warn", patience=3)
    rewards = [0.2, 0.6, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0]
    drive(guard, [{"reward": r} for r in rewards])
    assert [(e.guard, e.step) for e in guard.events] == [("collapse", 5), ("collapse", 10)]  # re-armed by 0.3
    assert "best 0.6" in guard.events[0].message and "for 3 logged steps" in guard.events[0].message


def test_collapse_does_not_fire_for_a_reward_that_was_never_above():
    guard = guard_with(collapse="stop", patience=2)
    assert drive(guard, [{"reward": 0.0}] * 6) == []
    assert guard.events == []


def test_collapse_threshold_and_nan_steps_do_not_break_the_streak():
    guard = guard_with(collapse="stop", patience=3, collapse_threshold=0.1)
    rewards = [0.5, 0.05, float("nan"), 0.1, 0.02]
    assert drive(guard, [{"reward": r} for r in rewards]) == [5]


def test_tool_skip_stops_after_patience_steps_without_a_search(caplog):
    guard = guard_with(tool_skip="stop", patience=3)
    shares = [0.5, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0]
    assert drive(guard, [{"search/episodes_with_search": s} for s in shares]) == [7]
    [event] = guard.events
    assert (event.metric, event.value, event.step) == ("search/episodes_with_search", 0.0, 7)
    assert "tool-skip" in caplog.text and "noise p" in caplog.text


def test_tool_skip_fires_on_a_falling_share_of_searching_episodes_before_it_reaches_zero(caplog):
    guard = TrainingGuardCallback(**{**ALL_OFF, "tool_skip": "warn"}, patience=3, tool_skip_drop=0.3)
    shares = [0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.6, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9]
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.training.guards"):
        drive(guard, [{"search/episodes_with_search": s} for s in shares])
    # Rolling means of 3: 0.9 (best) ... 0.633 (a fall of 0.267: not yet) then 0.533 at step 9 (0.367: fires).
    assert [(e.guard, e.step) for e in guard.events] == [("tool_skip", 9)]
    assert "averaged 0.533" in caplog.text and "best of 0.9" in caplog.text
    with pytest.raises(ValueError, match="tool_skip_drop must be in"):
        TrainingGuardCallback(tool_skip_drop=0)


def test_all_truncated_warns_when_every_completion_is_clipped():
    guard = guard_with(all_truncated="warn", patience=2)
    ratios = [1.0, 0.75, 1.0, 1.0, 1.0]
    assert drive(guard, [{"completions/clipped_ratio": r} for r in ratios]) == []
    assert [(e.guard, e.step) for e in guard.events] == [("all_truncated", 4)]
    assert "max_completion_length" in guard.events[0].message


def test_off_guards_stay_silent_and_keep_no_events(caplog):
    guard = guard_with(patience=1)
    rows = [{"reward": 1.0}, {"reward": float("nan"), "search/episodes_with_search": 0, "completions/clipped_ratio": 1}]
    assert drive(guard, rows) == []
    assert guard.events == [] and caplog.records == []


def test_only_the_main_process_logs_but_every_process_stops(caplog):
    guard = guard_with(nan_reward="stop")
    control = guard.on_log(
        None, TrainerState(global_step=1, is_world_process_zero=False), TrainerControl(), logs={"reward": None}
    )
    assert control.should_training_stop and caplog.records == []
    assert isinstance(guard.events[0], GuardEvent) and str(guard.events[0]) == guard.events[0].message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nan_reward": "panic"}, r"nan_reward must be one of 'off', 'warn', 'stop'; got 'panic'"),
        ({"tool_skip": "STOP"}, r"tool_skip must be one of 'off', 'warn', 'stop'"),
        ({"patience": 0}, r"patience must be an integer >= 1; got 0"),
        ({"patience": 2.5}, r"patience must be an integer"),
        ({"collapse_threshold": float("nan")}, r"collapse_threshold must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingGuardCallback(**kwargs)


@pytest.mark.slow
def test_real_grpo_run_stops_early_on_nan_rewards(tmp_path, tokenizer):
    from helpers import tiny_grpo_trainer

    def broken_reward(completions, **kwargs):
        return [float("nan")] * len(completions)

    guard = TrainingGuardCallback(nan_reward="stop", all_truncated="off")
    trainer = tiny_grpo_trainer(tokenizer, tmp_path, [broken_reward], [guard])
    trainer.train()

    assert trainer.state.global_step == 1 < trainer.args.max_steps
    [event] = guard.events
    assert (event.guard, event.step, event.action, event.value) == ("nan_reward", 1, "stop", None)
    # TRL logs an all-NaN step's reward as None (null): that is what the guard saw.
    assert trainer.state.log_history[0]["reward"] is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["warn", "off"])
def test_real_grpo_step_with_nan_gradients_leaves_the_weights_unchanged(tmp_path, tokenizer, mode, caplog):
    from helpers import tiny_grpo_trainer

    def length_reward(completions, **kwargs):
        return [float(len(completion)) for completion in completions]

    guard = TrainingGuardCallback(all_truncated="off", nonfinite_grad=mode)
    trainer = tiny_grpo_trainer(tokenizer, tmp_path, [length_reward], [guard], max_steps=1)
    # A NaN in one gradient, as a bf16 overflow would leave it; gradient clipping then spreads it to all of them.
    embeddings = trainer.model.get_input_embeddings().weight
    embeddings.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    after = dict(trainer.model.named_parameters())
    assert trainer.state.global_step == 1
    if mode == "off":  # what the guard prevents: the optimizer writes NaN into the weights
        assert not torch.isfinite(after["model.embed_tokens.weight"]).all()
        assert guard.events == []
        return
    assert all(torch.equal(before[name], p.detach()) for name, p in after.items())
    [event] = guard.events
    assert (event.guard, event.step, event.action, guard.skipped_steps) == ("nonfinite_grad", 1, "warn", 1)
    assert "skipped and the weights are unchanged" in caplog.text


def test_all_finite():
    assert all_finite([torch.ones(3), torch.zeros(2, 2)]) and all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([0.0, float("nan")])])
    assert not all_finite([torch.tensor([float("-inf")])])
