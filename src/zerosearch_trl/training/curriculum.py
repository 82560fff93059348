"""The noise curriculum: :class:`CurriculumCallback` sets the engine's noise probability from a schedule
(:mod:`~zerosearch_trl.training.schedules`) at every optimisation step, logs it, and resumes with checkpoints.

Example:
    >>> from types import SimpleNamespace
    >>> engine = SimpleNamespace(noise_prob=0.0)  # stands in for a SimulatedSearchEngine
    >>> callback = CurriculumCallback(engine, "exponential")
    >>> callback.on_step_begin(None, TrainerState(global_step=3, max_steps=4), None)  # the last of 4 steps
    >>> round(engine.noise_prob, 4)
    0.5
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from zerosearch_trl.training.logs import add_to_logs, attach_first
from zerosearch_trl.training.schedules import (
    ExponentialSchedule,
    Schedule,
    make_schedule,
)

logger = logging.getLogger(__name__)

NOISE_P_KEY = "curriculum/noise_p"
REWARD_KEY = "reward"  # the mean reward that TRL's GRPOTrainer logs


# state()["args"] must be JSON (TrainerState is saved as JSON); the target cannot be, so this marks its place.
_TARGET_PLACEHOLDER = "<target: not saved in checkpoints; pass it again when resuming>"
_MAX_WRAPPING = 8  # .engine links followed when looking for noise_prob


def _noise_holder(target: object) -> object | None:
    """``target`` if it has a settable ``noise_prob``, else the first object down its ``.engine`` chain that has."""
    obj = target
    for _ in range(_MAX_WRAPPING):
        if hasattr(obj, "noise_prob"):
            # Setting noise_prob on an engine *class* would overwrite its property for every instance.
            if isinstance(obj, type) and hasattr(inspect.getattr_static(obj, "noise_prob"), "__set__"):
                return None
            return obj
        obj = getattr(obj, "engine", None)
        if obj is None:
            return None
    return None


def _history_from(attributes: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The history from saved attributes, where JSON has turned each (step, p) into a list."""
    return [(int(step), float(p)) for step, p in attributes.get("history", [])]


class _CurriculumStandIn(TrainerCallback):
    """What ``CurriculumCallback(target=_TARGET_PLACEHOLDER, ...)`` builds: a callback that does nothing.

    With ``restore_callback_states_from_checkpoint=True``, transformers rebuilds each stateful callback from its saved
    args, removes the first callback *of the rebuilt object's class* and adds the rebuilt one. Being of another
    class, this stand-in leaves the original CurriculumCallback (which holds the target) in place; the original
    restores itself in ``on_train_begin``.
    """


class CurriculumCallback(TrainerCallback, ExportableState):
    """Sets the engine's noise probability from a schedule at every optimisation step, and logs it.

    At ``on_train_begin`` and at each ``on_step_begin`` it sets ``noise_prob = schedule(i, total_steps)`` on the
    target for the step ``i`` about to run, counted 1..m as in the reference implementation (``state.global_step +
    1``: the first step trains at ``schedule(1, m)``, the last at ``p_end``), and appends ``(i, p)`` to
    :attr:`history`. Every log gets ``curriculum/noise_p``, the probability in
    force during the steps just logged: added to ``logs`` for the callbacks after this one and to the entry already in
    ``trainer.state.log_history``. Reporting integrations (``report_to``) run before user callbacks, so add the
    callback with :meth:`attach` for them to see it. The ``reward`` that TRL's GRPOTrainer logs is passed to
    ``schedule.observe`` (which :class:`AdaptiveSchedule` uses). Where TRL generates for several steps at once
    (``steps_per_generation`` or ``num_iterations`` > 1), a generation batch gets the probability of the step that
    generates it.

    Resuming: the callback is an ``ExportableState``, so every checkpoint's ``trainer_state.json`` holds its state
    (the schedule with its run-time state, and the history). With ``trainer.train(resume_from_checkpoint=...)`` it
    restores that state itself in ``on_train_begin``, whatever ``restore_callback_states_from_checkpoint`` says
    (transformers, by default, restores nothing), provided the schedule it was built with has the same configuration
    as the saved one; otherwise it warns and carries on with the given schedule.

    Args:
        target: an object with a settable ``noise_prob`` (a :class:`~zerosearch_trl.SimulatedSearchEngine`), or an
            object or class whose ``engine`` has one (a rollout or tool environment wrapping the engine, also
            through several ``.engine`` links).
        schedule: a :class:`Schedule`, a schedule name for :func:`make_schedule`, or a dict from
            :meth:`Schedule.to_dict`; by default the paper's :class:`ExponentialSchedule` (0 to 0.5, base 4).
        total_steps: ``m`` for the schedule; by default the trainer's ``state.max_steps``.

    Example:
        >>> from types import SimpleNamespace
        >>> engine = SimpleNamespace(noise_prob=0.0)  # stands in for a SimulatedSearchEngine
        >>> from zerosearch_trl.training.schedules import LinearSchedule
        >>> callback = CurriculumCallback(engine, LinearSchedule(p_end=0.4))
        >>> trainer = GRPOTrainer(..., callbacks=[callback])  # doctest: +SKIP
        >>> callback.on_step_begin(None, TrainerState(global_step=4, max_steps=10), None)  # step 5 of 10
        >>> engine.noise_prob, callback.history
        (0.2, [(5, 0.2)])
    """

    def __new__(cls, target: object = None, *args: Any, **kwargs: Any) -> CurriculumCallback:
        if isinstance(target, str) and target == _TARGET_PLACEHOLDER:
            return _CurriculumStandIn()
        return super().__new__(cls)

    def __init__(
        self,
        target: object,
        schedule: Schedule | str | Mapping[str, Any] | None = None,
        total_steps: int | None = None,
    ) -> None:
        if _noise_holder(target) is None:
            kind = (
                f"the class {target.__qualname__}" if isinstance(target, type) else f"type {type(target).__qualname__}"
            )
            raise TypeError(
                f"CurriculumCallback needs an object with a settable noise_prob (e.g. a SimulatedSearchEngine "
                f"instance) or an object or class whose .engine has one (a rollout or tool environment wrapping the "
                f"engine); got {kind}."
            )
        if schedule is None:
            schedule = ExponentialSchedule()
        elif isinstance(schedule, str):
            schedule = make_schedule(schedule)
        elif isinstance(schedule, Mapping):
            schedule = Schedule.from_dict(schedule)
        elif not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a Schedule, a schedule name or a Schedule.to_dict() dict, got {type(schedule)}."
            )
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise ValueError(
                f"total_steps must be an integer >= 1 or None (the trainer's max_steps), got {total_steps!r}."
            )
        self.target, self.schedule, self.total_steps = target, schedule, total_steps
        self.history: list[tuple[int, float]] = []

    @property
    def current_p(self) -> float | None:
        """The noise probability last set (None before the first step)."""
        return self.history[-1][1] if self.history else None

    def attach(self, trainer: Any) -> CurriculumCallback:
        """Put this callback first among ``trainer``'s callbacks, so ``report_to`` integrations log the noise too.

        Example:
            >>> trainer = GRPOTrainer(..., report_to="wandb")  # doctest: +SKIP
            >>> CurriculumCallback(engine).attach(trainer)  # doctest: +SKIP
        """
        attach_first(trainer, self)
        return self

    def _apply(self, state: TrainerState) -> None:
        # Training steps count 1..m, as in the reference implementation, so that the last step trains at p_end:
        # global_step is the number of finished steps, and the step about to run is the next one.
        step = state.global_step + 1
        p = float(self.schedule(step, self.total_steps or state.max_steps))
        holder = _noise_holder(self.target)
        if holder is None:
            raise TypeError(f"The curriculum target {self.target!r} no longer leads to an object with noise_prob.")
        holder.noise_prob = p
        if not self.history or self.history[-1] != (step, p):
            self.history.append((step, p))

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step > 0:  # resumed: the loaded TrainerState holds the checkpoint's callback states
            self._restore(state.stateful_callbacks.get(type(self).__name__))
        self._apply(state)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._apply(state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None:
            return
        if logs.get(REWARD_KEY) is not None:
            self.schedule.observe(float(logs[REWARD_KEY]))
        if self.current_p is None:
            return
        add_to_logs(state, logs, {NOISE_P_KEY: self.current_p}, overwrite=False)

    def state(self) -> dict[str, Any]:
        """The ``ExportableState`` that ``Trainer`` writes into each checkpoint's ``trainer_state.json``."""
        return {
            "args": {
                "target": _TARGET_PLACEHOLDER,
                "schedule": self.schedule.to_dict(),
                "total_steps": self.total_steps,
            },
            "attributes": {"history": [[step, p] for step, p in self.history]},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], target: object = None) -> CurriculumCallback:
        """Rebuild a callback from :meth:`state`; the target is not saved, so pass it again.

        Example:
            >>> from types import SimpleNamespace
            >>> callback = CurriculumCallback(SimpleNamespace(noise_prob=0.0), "adaptive")
            >>> copy = CurriculumCallback.from_state(callback.state(), target=SimpleNamespace(noise_prob=0.0))
            >>> copy.schedule == callback.schedule
            True
        """
        if target is None:
            raise TypeError(
                "CurriculumCallback.from_state needs the target, which checkpoints do not hold: "
                "from_state(state, target=engine)."
            )
        callback = cls(**{**state["args"], "target": target})
        callback.history = _history_from(state["attributes"])
        return callback

    def _restore(self, saved: Any) -> None:
        if saved is None:
            logger.warning(
                "Resuming from a checkpoint without CurriculumCallback state: the schedule goes on from its "
                "arguments, without saved run-time state or history."
            )
            return
        if isinstance(saved, list):
            logger.warning(
                "The checkpoint holds several CurriculumCallback states, which cannot be told apart; their "
                "schedules continue from their arguments, without their run-time state."
            )
            return
        saved_schedule = dict(saved["args"]["schedule"])
        saved_state = saved_schedule.pop("state", None)
        given = self.schedule.to_dict()
        given.pop("state", None)
        if json.loads(json.dumps(given)) != saved_schedule:
            logger.warning(
                "The checkpoint's schedule %s differs from the given %s; keeping the given one.", saved_schedule, given
            )
            return
        if saved_state is not None:
            self.schedule._load_state(saved_state)
        self.history = _history_from(saved["attributes"])


# ``__new__`` takes ``*args`` for the stand-in above; show help(), IDEs and inspect the real arguments of ``__init__``.
_init = inspect.signature(CurriculumCallback.__init__)
CurriculumCallback.__signature__ = _init.replace(
    parameters=list(_init.parameters.values())[1:], return_annotation=inspect.Signature.empty
)
del _init
