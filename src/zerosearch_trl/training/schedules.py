"""The noise schedules: how often the simulated engine serves noisy documents, step by step during training.

ZeroSearch starts RL with useful documents only and makes retrieval harder as the policy improves: at step ``i``
of ``m`` the simulator serves noisy documents with probability

    ``p_i = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)``

(paper defaults ``p_s = 0``, ``p_e = 0.5``, ``b = 4``; ``m`` is the number of training steps). A schedule maps a step
to that probability (:class:`ExponentialSchedule`, and for ablations :class:`LinearSchedule`,
:class:`StepSchedule`, :class:`ConstantSchedule`, and the reward-driven :class:`AdaptiveSchedule`);
:class:`~zerosearch_trl.training.curriculum.CurriculumCallback` applies it to the engine at the start of every optimisation step of a
``transformers``/TRL trainer, logs it as ``curriculum/noise_p`` and carries its state across
``resume_from_checkpoint``.

Example:
    >>> schedule = make_schedule("exponential")
    >>> [round(schedule(step, total_steps=4), 4) for step in range(5)]
    [0.0, 0.069, 0.1667, 0.3047, 0.5]
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


def _check_probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")


def _check_ramp_steps(ramp_steps: int | None) -> None:
    if ramp_steps is not None and (not isinstance(ramp_steps, int) or ramp_steps < 1):
        raise ValueError(f"ramp_steps must be an integer >= 1, or None for the run's total steps; got {ramp_steps!r}.")


@dataclass
class Schedule:
    """Base of the noise schedules: ``schedule(step, total_steps)`` is the noise probability for that step.

    A schedule is a dataclass whose init fields are its configuration; :meth:`to_dict` writes them (plus any run-time
    state, under ``"state"``) as JSON-ready values and :meth:`from_dict` rebuilds the schedule, so that a checkpoint
    can hold it. Schedules that adapt to training get rewards through :meth:`observe`; the others ignore them.

    Example:
        >>> schedule = Schedule.from_dict({"name": "linear", "p_end": 0.2})
        >>> schedule(5, total_steps=10), schedule.to_dict()
        (0.1, {'name': 'linear', 'p_start': 0.0, 'p_end': 0.2, 'ramp_steps': None})
    """

    name: ClassVar[str] = ""

    def __call__(self, step: int, total_steps: int) -> float:
        """The noise probability at ``step`` (0-based) of a run of ``total_steps`` optimisation steps."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0 (0 is the first optimisation step), got {step!r}.")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(
                f"total_steps must be an integer >= 1 (the run's number of optimisation steps), got {total_steps!r}."
            )
        return self._value(step, total_steps)

    def _value(self, step: int, total_steps: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement _value(step, total_steps).")

    def observe(self, reward: float) -> None:
        """Feed the mean reward of the steps just logged; schedules that do not adapt ignore it."""

    def to_dict(self) -> dict[str, Any]:
        """The schedule as a JSON-ready dict: ``name``, the configuration, and ``state`` where it has one."""
        data: dict[str, Any] = {"name": self.name}
        for f in fields(self):
            if f.init:
                value = getattr(self, f.name)
                data[f.name] = list(value) if isinstance(value, tuple) else value
        state = self._state()
        if state:
            data["state"] = state
        return data

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Schedule:
        """Rebuild a schedule written by :meth:`to_dict` (any of the names :func:`make_schedule` knows)."""
        config = dict(data)
        if "name" not in config:
            raise ValueError(f"A schedule dict needs a 'name' key, as written by Schedule.to_dict(); got {data!r}.")
        state = config.pop("state", None)
        schedule = make_schedule(config.pop("name"), **config)
        if state is not None:
            schedule._load_state(state)
        return schedule

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no run-time state, got {dict(state)!r}.")


@dataclass
class ExponentialSchedule(Schedule):
    """The ZeroSearch curriculum: ``p_i = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)``, held at ``p_e`` after ``m``.

    Noise stays low while the policy learns the search format and rises ever faster towards the end.

    Args:
        p_start: ``p_s``, the noise probability at step 0 (paper: 0.0).
        p_end: ``p_e``, the noise probability at step ``m`` (paper: 0.5).
        base: ``b``, the curvature: > 1 ramps slowly first (paper: 4), < 1 quickly first; must be > 0 and != 1.
        ramp_steps: ``m``; None (the default) uses the run's total steps.

    Example:
        >>> schedule = ExponentialSchedule()
        >>> schedule(0, total_steps=100), schedule(50, total_steps=100), schedule(100, total_steps=100)
        (0.0, 0.16666666666666666, 0.5)
    """

    name: ClassVar[str] = "exponential"
    p_start: float = 0.0
    p_end: float = 0.5
    base: float = 4.0
    ramp_steps: int | None = None

    def __post_init__(self) -> None:
        _check_probability("p_start", self.p_start)
        _check_probability("p_end", self.p_end)
        base = self.base
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not (math.isfinite(base) and base > 0):
            raise ValueError(f"base must be a finite number > 0 and != 1, got {base!r}; the paper uses base=4.")
        if base == 1:
            raise ValueError(
                "base must be > 0 and != 1, got 1 (the formula divides by b - 1); for a straight ramp use "
                "LinearSchedule, for a slow start base=4 (the paper's)."
            )
        _check_ramp_steps(self.ramp_steps)

    def _value(self, step: int, total_steps: int) -> float:
        m = self.ramp_steps or total_steps
        fraction = (self.base ** (min(step, m) / m) - 1) / (self.base - 1)
        return self.p_start + fraction * (self.p_end - self.p_start)


@dataclass
class LinearSchedule(Schedule):
    """A straight ramp: ``p_i = p_s + (i / m) * (p_e - p_s)``, held at ``p_e`` after ``m``.

    Args:
        p_start: ``p_s``, the noise probability at step 0.
        p_end: ``p_e``, the noise probability at step ``m``.
        ramp_steps: ``m``; None (the default) uses the run's total steps.

    Example:
        >>> LinearSchedule(p_end=0.4)(25, total_steps=100)
        0.1
    """

    name: ClassVar[str] = "linear"
    p_start: float = 0.0
    p_end: float = 0.5
    ramp_steps: int | None = None

    def __post_init__(self) -> None:
        _check_probability("p_start", self.p_start)
        _check_probability("p_end", self.p_end)
        _check_ramp_steps(self.ramp_steps)

    def _value(self, step: int, total_steps: int) -> float:
        m = self.ramp_steps or total_steps
        return self.p_start + min(step, m) / m * (self.p_end - self.p_start)


@dataclass
class StepSchedule(Schedule):
    """Piecewise constant: ``values[k]`` from ``milestones[k - 1]`` on (``values[0]`` before the first milestone).

    Args:
        milestones: the steps at which the probability changes, strictly increasing, each >= 1.
        values: one probability per interval, ``len(milestones) + 1`` of them.

    Example:
        >>> schedule = StepSchedule(milestones=[100, 200], values=[0.0, 0.25, 0.5])
        >>> [schedule(step, total_steps=300) for step in (0, 99, 100, 250)]
        [0.0, 0.0, 0.25, 0.5]
    """

    name: ClassVar[str] = "step"
    milestones: Sequence[int]
    values: Sequence[float]

    def __post_init__(self) -> None:
        self.milestones, self.values = tuple(self.milestones), tuple(self.values)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones) or any(
            a >= b for a, b in zip(self.milestones, self.milestones[1:])
        ):
            raise ValueError(f"milestones must be strictly increasing integer steps >= 1, got {list(self.milestones)}.")
        if len(self.values) != len(self.milestones) + 1:
            raise ValueError(
                f"values needs len(milestones) + 1 = {len(self.milestones) + 1} probabilities (one before the first "
                f"milestone, one after each), got {len(self.values)}: {list(self.values)}."
            )
        for k, value in enumerate(self.values):
            _check_probability(f"values[{k}]", value)

    def _value(self, step: int, total_steps: int) -> float:
        return self.values[bisect.bisect_right(self.milestones, step)]


@dataclass
class ConstantSchedule(Schedule):
    """The same noise probability at every step (the paper's non-curriculum ablation).

    Args:
        p: the noise probability.

    Example:
        >>> ConstantSchedule(0.3)(7, total_steps=10)
        0.3
    """

    name: ClassVar[str] = "constant"
    p: float

    def __post_init__(self) -> None:
        _check_probability("p", self.p)

    def _value(self, step: int, total_steps: int) -> float:
        return self.p


@dataclass
class AdaptiveSchedule(Schedule):
    """Noise driven by the reward: harder while the policy copes, easier when it collapses.

    Every reward passed to :meth:`observe` enters a rolling window of the last ``window`` rewards. Once the window is
    full, a mean above ``raise_above`` raises the probability by ``step_size``, a mean below ``back_off_below`` lowers
    it by ``step_size``, always within ``[p_min, p_max]``; after a change the window starts afresh, so that each
    change rests on rewards earned at the current noise level. The step number does not matter, only the rewards;
    :class:`CurriculumCallback` feeds it the ``reward`` that TRL's GRPOTrainer logs (one value per logging step).

    Args:
        p_start: the probability before any reward is seen.
        p_min: the lowest probability a back-off reaches.
        p_max: the highest probability a raise reaches (the paper's ``p_e``, 0.5, by default).
        step_size: how much one raise or back-off moves the probability.
        window: how many rewards the rolling mean covers.
        raise_above: a full window whose mean exceeds this raises the probability.
        back_off_below: a full window whose mean falls under this lowers it; must be below ``raise_above``.

    Example:
        >>> schedule = AdaptiveSchedule(step_size=0.1, window=2)
        >>> for reward in [0.9, 0.8, 0.1, 0.0]:
        ...     schedule.observe(reward)
        ...     print(schedule(0, total_steps=1))
        0.0
        0.1
        0.1
        0.0
    """

    name: ClassVar[str] = "adaptive"
    p_start: float = 0.0
    p_min: float = 0.0
    p_max: float = 0.5
    step_size: float = 0.05
    window: int = 10
    raise_above: float = 0.5
    back_off_below: float = 0.2
    p: float = field(init=False, repr=False, compare=False)
    rewards: deque[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("p_start", "p_min", "p_max"):
            _check_probability(name, getattr(self, name))
        if not self.p_min <= self.p_start <= self.p_max:
            raise ValueError(
                f"need p_min <= p_start <= p_max, got p_min={self.p_min}, p_start={self.p_start}, p_max={self.p_max}."
            )
        if (
            isinstance(self.step_size, bool)
            or not isinstance(self.step_size, (int, float))
            or not 0 < self.step_size <= 1
        ):
            raise ValueError(f"step_size must be in (0, 1] (e.g. 0.05), got {self.step_size!r}.")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1 (rewards in the rolling mean), got {self.window!r}.")
        if not self.back_off_below < self.raise_above:
            raise ValueError(
                f"back_off_below must be below raise_above, got back_off_below={self.back_off_below!r} and "
                f"raise_above={self.raise_above!r}."
            )
        self.p = float(self.p_start)
        self.rewards = deque(maxlen=self.window)

    def _value(self, step: int, total_steps: int) -> float:
        return self.p

    def observe(self, reward: float) -> None:
        """Add a reward to the window; a full window may raise or lower the probability (non-finite: ignored)."""
        if reward is None or not math.isfinite(reward):
            return
        self.rewards.append(float(reward))
        if len(self.rewards) < self.window:
            return
        mean = sum(self.rewards) / len(self.rewards)
        if mean > self.raise_above:
            new_p = min(self.p + self.step_size, self.p_max)
        elif mean < self.back_off_below:
            new_p = max(self.p - self.step_size, self.p_min)
        else:
            return
        new_p = round(new_p, 12)  # repeated +/- step_size would drift (0.30000000000000004)
        if new_p != self.p:
            self.p = new_p
            self.rewards.clear()

    def _state(self) -> dict[str, Any]:
        return {"p": self.p, "rewards": list(self.rewards)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        p = state["p"]
        if not self.p_min <= p <= self.p_max:
            raise ValueError(f"saved p={p!r} lies outside [p_min, p_max] = [{self.p_min}, {self.p_max}].")
        self.p = float(p)
        self.rewards = deque((float(r) for r in state["rewards"]), maxlen=self.window)


_SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (ExponentialSchedule, LinearSchedule, StepSchedule, ConstantSchedule, AdaptiveSchedule)
}


def make_schedule(name: str, **kwargs: Any) -> Schedule:
    """Build a schedule by name: ``"exponential"``, ``"linear"``, ``"step"``, ``"constant"`` or ``"adaptive"``.

    Args:
        name: the schedule's name.
        **kwargs: the schedule class's arguments (see each class).

    Example:
        >>> make_schedule("step", milestones=[10], values=[0.0, 0.5])(10, total_steps=20)
        0.5
    """
    if name not in _SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; valid names: {', '.join(repr(n) for n in _SCHEDULES)}.")
    return _SCHEDULES[name](**kwargs)
