"""The noise curriculum: schedule values, adaptation, validation, and the callback inside real GRPOTrainer runs."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import datasets
import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState

from helpers import ScriptedGenerator, cpu_config, make_tiny_model
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.rollout import make_search_rollout
from zerosearch_trl.training.curriculum import NOISE_P_KEY, CurriculumCallback
from zerosearch_trl.training.schedules import (
    AdaptiveSchedule,
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    Schedule,
    StepSchedule,
    make_schedule,
)


def make_engine() -> SimulatedSearchEngine:
    return SimulatedSearchEngine(ScriptedGenerator(lambda prompts: ["Doc 1 (Title: T) text."] * len(prompts)))


# --- schedules -------------------------------------------------------------------------------------------------------


def test_exponential_schedule_matches_the_paper_formula_by_hand():
    schedule = ExponentialSchedule()  # p_s=0, p_e=0.5, b=4
    assert schedule(0, total_steps=200) == 0.0
    assert schedule(200, total_steps=200) == pytest.approx(0.5)
    # i = m/2: (4^(1/2) - 1) / (4 - 1) * 0.5 = (2 - 1) / 3 * 0.5 = 1/6
    assert schedule(100, total_steps=200) == pytest.approx(1 / 6)
    # i = m/4: (4^(1/4) - 1) / 3 * 0.5 = (sqrt(2) - 1) / 6
    assert schedule(50, total_steps=200) == pytest.approx((math.sqrt(2) - 1) / 6)
    assert schedule(500, total_steps=200) == pytest.approx(0.5)  # held after m
    # An explicit m overrides the run length; other endpoints and bases follow the same formula.
    assert ExponentialSchedule(ramp_steps=10)(5, total_steps=1000) == pytest.approx(1 / 6)
    custom = ExponentialSchedule(p_start=0.1, p_end=0.9, base=9)
    assert custom(5, total_steps=10) == pytest.approx(0.1 + (3 - 1) / 8 * 0.8)  # 9^(1/2) = 3


def test_linear_step_and_constant_schedules():
    assert LinearSchedule()(0, 10) == 0.0
    assert LinearSchedule()(5, 10) == pytest.approx(0.25)
    assert LinearSchedule(p_start=0.5, p_end=0.1, ramp_steps=4)(3, 100) == pytest.approx(0.2)
    assert LinearSchedule()(20, 10) == pytest.approx(0.5)
    steps = StepSchedule(milestones=[10, 20], values=[0.0, 0.2, 0.4])
    assert [steps(i, 30) for i in (0, 9, 10, 19, 20, 29, 99)] == [0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.4]
    assert [ConstantSchedule(0.3)(i, 5) for i in range(5)] == [0.3] * 5


@pytest.mark.parametrize("schedule", [ExponentialSchedule(), ExponentialSchedule(base=0.25), LinearSchedule()])
def test_ramps_rise_monotonically_from_start_to_end(schedule):
    values = [schedule(i, 50) for i in range(51)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.5)


def test_exponential_is_slow_first_and_base_below_one_is_fast_first():
    assert ExponentialSchedule()(25, 50) < LinearSchedule()(25, 50) < ExponentialSchedule(base=0.25)(25, 50)


def test_adaptive_schedule_rises_while_rewards_hold_and_backs_off_when_they_collapse():
    schedule = AdaptiveSchedule(p_start=0.1, p_min=0.05, p_max=0.3, step_size=0.1, window=2, raise_above=0.6)
    trace = []
    for reward in [0.9, 0.7, 0.8, 0.9, 0.95, 0.9, 0.9, 0.3, 0.4, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0]:
        schedule.observe(reward)
        trace.append(schedule(0, 1))
    assert trace == [
        0.1, 0.2,  # a full window above 0.6: raise
        0.2, 0.3,  # a fresh full window above 0.6: raise to p_max
        0.3, 0.3, 0.3,  # capped at p_max
        0.3, 0.3, 0.3,  # [0.9, 0.3], [0.3, 0.4], [0.4, 0.1] lie between the thresholds (0.2, 0.6]: hold
        0.2,  # [0.1, 0.0] collapses below 0.2: back off
        0.2, 0.1,  # again, on a fresh window
        0.1, 0.05,  # floored at p_min
    ]  # fmt: skip
    schedule.observe(0.0)
    before = (schedule.p, list(schedule.rewards))
    schedule.observe(float("nan"))  # GRPO logs a NaN/None mean reward when every reward function returned None
    assert (schedule.p, list(schedule.rewards)) == before == (0.05, [0.0])


def test_adaptive_schedule_needs_a_full_window_and_ignores_the_step():
    schedule = AdaptiveSchedule(window=3, step_size=0.1)
    schedule.observe(1.0)
    schedule.observe(1.0)
    assert schedule(0, 10) == schedule(9, 10) == 0.0
    schedule.observe(1.0)
    assert schedule(0, 10) == schedule(9, 10) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("build", "bad"),
    [
        (lambda: ExponentialSchedule(base=1), "got 1"),
        (lambda: ExponentialSchedule(base=-2), "-2"),
        (lambda: ExponentialSchedule(base=float("nan")), "nan"),
        (lambda: ExponentialSchedule(p_end=1.5), "1.5"),
        (lambda: ExponentialSchedule(p_start=-0.1), "-0.1"),
        (lambda: ExponentialSchedule(ramp_steps=0), "ramp_steps.*got 0"),
        (lambda: LinearSchedule(p_end="0.5"), "'0.5'"),
        (lambda: StepSchedule(milestones=[20, 10], values=[0, 0.1, 0.2]), r"\[20, 10\]"),
        (lambda: StepSchedule(milestones=[10], values=[0.1]), "needs len.*got 1"),
        (lambda: StepSchedule(milestones=[10], values=[0.1, 2.0]), r"values\[1\].*2.0"),
        (lambda: ConstantSchedule(p=True), "True"),
        (lambda: AdaptiveSchedule(p_start=0.6), "p_start=0.6"),
        (lambda: AdaptiveSchedule(window=0), "window.*got 0"),
        (lambda: AdaptiveSchedule(step_size=0), "step_size.*got 0"),
        (lambda: AdaptiveSchedule(raise_above=0.1, back_off_below=0.3), "back_off_below=0.3"),
        (lambda: ExponentialSchedule()(-1, 10), "step must.*got -1"),
        (lambda: ExponentialSchedule()(0, 0), "total_steps must.*got 0"),
        (lambda: make_schedule("cosine"), "'cosine'.*'exponential', 'linear', 'step', 'constant', 'adaptive'"),
    ],
)
def test_bad_arguments_raise_naming_the_bad_value(build, bad):
    with pytest.raises(ValueError, match=bad):
        build()


@pytest.mark.parametrize(
    "schedule",
    [
        ExponentialSchedule(p_end=0.4, base=2, ramp_steps=7),
        LinearSchedule(p_start=0.2),
        StepSchedule(milestones=[3, 5], values=[0.0, 0.1, 0.3]),
        ConstantSchedule(0.25),
        AdaptiveSchedule(window=3, step_size=0.1),
    ],
)
def test_schedules_round_trip_through_json(schedule):
    for reward in (0.9, 0.9, 0.9, 0.8):  # moves the adaptive one off its start, with a partial window
        schedule.observe(reward)
    data = json.loads(json.dumps(schedule.to_dict()))
    copy = Schedule.from_dict(data)
    assert type(copy) is type(schedule) and copy == schedule
    assert [copy(i, 10) for i in range(12)] == [schedule(i, 10) for i in range(12)]
    assert copy.to_dict() == schedule.to_dict()
    assert make_schedule(**{k: v for k, v in data.items() if k != "state"}) == schedule


def test_adaptive_round_trip_keeps_the_run_time_state():
    schedule = AdaptiveSchedule(window=3, step_size=0.1)
    for reward in (0.9, 0.9, 0.9, 0.8):
        schedule.observe(reward)
    copy = Schedule.from_dict(json.loads(json.dumps(schedule.to_dict())))
    assert copy.p == pytest.approx(0.1) and list(copy.rewards) == [0.8]
    for s in (schedule, copy):
        s.observe(0.9)
        s.observe(0.9)
    assert copy(0, 1) == schedule(0, 1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="name"):
        Schedule.from_dict({"p": 0.1})


# --- the callback without a trainer ------------------------------------------------------------------------------------


class ToolEnvironment:
    """A TRL tool environment class sharing one engine through a class attribute."""

    engine = make_engine()


def engine_itself():
    engine = make_engine()
    return engine, engine


def rollout_over_the_engine():
    rollout = make_search_rollout(make_engine())
    return rollout, rollout.engine


def wrapper_of_a_wrapper():
    engine = make_engine()
    return SimpleNamespace(engine=SimpleNamespace(engine=engine)), engine


@pytest.mark.parametrize(
    "make_target",
    [
        engine_itself,
        rollout_over_the_engine,
        wrapper_of_a_wrapper,
        lambda: (ToolEnvironment, ToolEnvironment.engine),
        lambda: (ToolEnvironment(), ToolEnvironment.engine),
    ],
    ids=["engine", "rollout", "wrapper-of-wrapper", "environment-class", "environment-instance"],
)
def test_the_callback_sets_noise_prob_on_the_engine_or_the_engine_a_target_wraps(make_target):
    target, holder = make_target()
    callback = CurriculumCallback(target, LinearSchedule(), total_steps=10)
    callback.on_step_begin(None, TrainerState(global_step=4, max_steps=99), TrainerControl())  # step 5 of 10
    assert holder.noise_prob == pytest.approx(0.25)
    assert callback.history == [(5, pytest.approx(0.25))]


@pytest.mark.parametrize(
    "target, named",
    [
        (object(), "type object"),
        (SimpleNamespace(engine=None), "type SimpleNamespace"),
        (SimulatedSearchEngine, "the class SimulatedSearchEngine"),  # its property must not be overwritten
    ],
)
def test_the_callback_rejects_a_target_without_noise_prob(target, named):
    with pytest.raises(TypeError, match=f"settable noise_prob.*got {named}"):
        CurriculumCallback(target)


def test_the_callback_uses_max_steps_by_default_and_records_each_step_once():
    engine = make_engine()
    callback = CurriculumCallback(engine)
    assert callback.schedule == ExponentialSchedule() and callback.current_p is None
    state = TrainerState(global_step=0, max_steps=4)
    callback.on_train_begin(None, state, TrainerControl())
    callback.on_step_begin(None, state, TrainerControl())  # the same step again: not recorded twice
    state.global_step = 2
    callback.on_step_begin(None, state, TrainerControl())
    third = 0.5 * (4**0.75 - 1) / 3
    assert callback.history == [(1, pytest.approx(0.5 * (4**0.25 - 1) / 3)), (3, pytest.approx(third))]
    assert engine.noise_prob == callback.current_p == pytest.approx(third)


def test_the_last_of_m_steps_trains_at_p_end_as_in_the_reference():
    """The reference counts training steps 1..m: step i trains at p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)."""
    engine = make_engine()
    callback = CurriculumCallback(engine, ExponentialSchedule(p_start=0.0, p_end=0.5, base=4))
    state = TrainerState(global_step=0, max_steps=4)
    seen = []
    for finished in range(4):  # global_step counts the finished steps; the step about to run is finished + 1
        state.global_step = finished
        callback.on_step_begin(None, state, TrainerControl())
        seen.append(engine.noise_prob)
    assert seen == [pytest.approx(0.5 * (4 ** (i / 4) - 1) / 3) for i in (1, 2, 3, 4)]
    assert seen[-1] == pytest.approx(0.5)


def test_callback_state_is_json_and_rebuilds_with_the_target():
    callback = CurriculumCallback(make_engine(), {"name": "adaptive", "window": 1, "step_size": 0.1}, total_steps=8)
    state = TrainerState(max_steps=8)
    callback.on_train_begin(None, state, TrainerControl())
    callback.on_log(None, state, TrainerControl(), logs={"reward": 0.9})
    state.global_step = 1
    callback.on_step_begin(None, state, TrainerControl())
    saved = json.loads(json.dumps(callback.state()))
    engine = make_engine()
    copy = CurriculumCallback.from_state(saved, target=engine)
    assert copy.history == callback.history == [(1, 0.0), (2, pytest.approx(0.1))]
    assert copy.schedule == callback.schedule and copy.schedule.p == pytest.approx(0.1) and copy.total_steps == 8
    with pytest.raises(TypeError, match="needs the target"):
        CurriculumCallback.from_state(saved)


def test_resume_restores_only_a_matching_schedule(caplog):
    saved = CurriculumCallback(make_engine(), AdaptiveSchedule(window=1, step_size=0.1))
    saved.schedule.observe(1.0)
    saved.on_step_begin(None, TrainerState(global_step=3, max_steps=8), TrainerControl())

    def resume(schedule, checkpoint_callbacks):
        callback = CurriculumCallback(make_engine(), schedule)
        state = TrainerState(global_step=4, max_steps=8, stateful_callbacks=checkpoint_callbacks)
        callback.on_train_begin(None, state, TrainerControl())
        return callback

    same = resume(AdaptiveSchedule(window=1, step_size=0.1), {"CurriculumCallback": saved.state()})
    assert same.history == [(4, 0.1), (5, 0.1)]
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.training.curriculum"):
        changed = resume(AdaptiveSchedule(window=1, step_size=0.2), {"CurriculumCallback": saved.state()})
        missing = resume(AdaptiveSchedule(window=1, step_size=0.1), {})
    assert changed.history == missing.history == [(5, 0.0)]  # the given schedules, from their start
    first, second = (r.getMessage() for r in caplog.records)
    assert "differs from the given" in first and "without CurriculumCallback state" in second


# --- real GRPOTrainer runs ---------------------------------------------------------------------------------------------


class LogRecorder(TrainerCallback):
    """Stands in for a report_to integration: sees each logs dict when its turn comes."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A 32-wide model gains nothing from threads, and on a busy machine they thrash (6x slower here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_grpo_trainer(tokenizer, output_dir, reward_func, callbacks, max_steps=4, **config):
    from trl import GRPOTrainer

    dataset = datasets.Dataset.from_list([{"prompt": f"Question {i}?"} for i in range(4)])
    args = cpu_config(
        output_dir,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=max_steps,
        **config,
    )
    return GRPOTrainer(
        model=make_tiny_model(tokenizer),
        reward_funcs=[reward_func],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


@pytest.mark.slow
def test_grpo_run_follows_the_exponential_schedule_and_logs_it(tmp_path, tokenizer):
    engine = make_engine()
    seen = []  # (step, the engine's noise_prob) while each step's completions are scored

    def reward(completions, trainer_state, **kwargs):
        seen.append((trainer_state.global_step, engine.noise_prob))
        return [0.5] * len(completions)

    curriculum = CurriculumCallback(engine)  # the paper's schedule over max_steps
    recorder = LogRecorder()
    trainer = make_grpo_trainer(tokenizer, tmp_path, reward, callbacks=[recorder])
    curriculum.attach(trainer)
    trainer.train()

    expected = [0.5 * (4 ** (i / 4) - 1) / 3 for i in (1, 2, 3, 4)]  # 0.069, 0.167, 0.305, 0.5: the last at p_end
    assert seen == [(i, pytest.approx(p)) for i, p in enumerate(expected)]
    assert curriculum.history == [(i + 1, pytest.approx(p)) for i, p in enumerate(expected)]
    # Each step's log carries the probability in force during that step, in log_history and for later callbacks.
    step_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [(e["step"], e[NOISE_P_KEY]) for e in step_logs] == [
        (i + 1, pytest.approx(p)) for i, p in enumerate(expected)
    ]
    assert [r[NOISE_P_KEY] for r in recorder.logs if "loss" in r] == [e[NOISE_P_KEY] for e in step_logs]


def adaptive_curriculum(engine):
    # One reward per window, so every step counts: rewards 1, 1, 0, 0 move p 0 -> 0.1 -> 0.2 -> 0.1 -> 0.
    return CurriculumCallback(engine, AdaptiveSchedule(step_size=0.1, window=1))


def step_keyed_reward(engine, seen):
    """Reward 1 for the first two steps, 0 after; records (step, the engine's noise_prob) as each step is scored."""

    def reward(completions, trainer_state, **kwargs):
        seen.append((trainer_state.global_step, engine.noise_prob))
        return [1.0 if trainer_state.global_step < 2 else 0.0] * len(completions)

    return reward


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, tokenizer):
    output_dir = tmp_path_factory.mktemp("curriculum-run")
    engine, seen = make_engine(), []
    curriculum = adaptive_curriculum(engine)
    reward = step_keyed_reward(engine, seen)
    trainer = make_grpo_trainer(tokenizer, output_dir, reward, [curriculum], save_strategy="steps", save_steps=2)
    trainer.train()
    return output_dir, curriculum, seen


@pytest.mark.slow
@pytest.mark.parametrize("transformers_restores_callbacks", [False, True])
def test_resume_continues_the_adaptive_schedule_where_it_stopped(
    uninterrupted_run, tmp_path, tokenizer, transformers_restores_callbacks, caplog
):
    output_dir, uninterrupted, uninterrupted_seen = uninterrupted_run
    assert uninterrupted_seen == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.1)]
    assert uninterrupted.history == [(step + 1, p) for step, p in uninterrupted_seen]  # training steps 1..m
    # Without its saved state a callback would start over: p=0 at step 2, not 0.2.
    assert adaptive_curriculum(make_engine()).schedule(2, 4) == 0.0

    engine, seen = make_engine(), []
    resumed = adaptive_curriculum(engine)
    trainer = make_grpo_trainer(
        tokenizer,
        tmp_path,
        step_keyed_reward(engine, seen),
        [resumed],
        restore_callback_states_from_checkpoint=transformers_restores_callbacks,
    )
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=str(output_dir / "checkpoint-2"))

    assert seen == uninterrupted_seen[2:]
    assert resumed.history == uninterrupted.history  # the first two entries come from the checkpoint
    # The callback that holds the engine is still the one in the trainer (transformers did not swap it out).
    assert [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, CurriculumCallback)] == [resumed]
    assert not [r for r in caplog.records if r.name == "zerosearch_trl.training.curriculum"]
