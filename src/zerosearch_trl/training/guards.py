"""Training guards: watch each logged step for the failures that waste an RL run, and warn or stop.

:class:`TrainingGuardCallback` reads the metrics a GRPO run logs and fires when

- ``nan_reward``: the ``reward`` is NaN, inf or null (TRL logs null when every reward of the step was NaN/None);
- ``collapse``: the ``reward`` stays at or below a threshold for ``patience`` logged steps after having been above it;
- ``tool_skip``: the share of episodes that search (``search/episodes_with_search``), averaged over the last
  ``patience`` logged steps, is 0, or has fallen by ``tool_skip_drop`` or more below its best such average: a policy
  that learns to answer without searching shows it as a falling share long before no episode searches at all;
- ``all_truncated``: every completion hit the length limit (``completions/clipped_ratio == 1``) for ``patience``
  logged steps;
- ``nonfinite_grad``: an optimisation step's gradients hold NaN or inf. Unlike the others it acts before the step,
  not from the logs: the step's gradients are dropped, so the optimizer leaves the weights as they were. One such
  step would otherwise turn every weight into NaN, and the next sampling call would fail (on CUDA, with a
  device-side assert that ends the process).

Each guard is ``"off"``, ``"warn"`` (a ``logging`` warning naming the metric, its value, the step and what to try)
or ``"stop"`` (the warning, then ``control.should_training_stop = True``). A guard fires once per streak and fires
again only after the condition has cleared. The events are kept in ``callback.events`` for the run report.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from zerosearch_trl.training.logs import is_finite_number

logger = logging.getLogger(__name__)

GuardMode = Literal["off", "warn", "stop"]
MODES: tuple[str, ...] = ("off", "warn", "stop")

REWARD_KEY = "reward"
SEARCH_KEY = "search/episodes_with_search"
CLIPPED_KEY = "completions/clipped_ratio"


@dataclass(frozen=True)
class GuardEvent:
    """One firing of a guard.

    Attributes:
        guard: ``"nan_reward"``, ``"collapse"``, ``"tool_skip"``, ``"all_truncated"`` or ``"nonfinite_grad"``.
        step: the trainer's global step when it fired.
        metric: the logged key that tripped it.
        value: that key's value (``None`` where it was logged as null).
        action: ``"warn"`` or ``"stop"``.
        message: the full warning, with what to try.

    Example:
        >>> event = GuardEvent("tool_skip", 30, "search/episodes_with_search", 0.0, "warn", "...")
        >>> event.guard, event.step
        ('tool_skip', 30)
    """

    guard: str
    step: int
    metric: str
    value: float | None
    action: str
    message: str

    def __str__(self) -> str:
        return self.message


class TrainingGuardCallback(TrainerCallback):
    """Warns about, or stops, a run whose logged metrics show NaN rewards, reward collapse, tool-skip or truncation;
    skips optimisation steps whose gradients are not finite.

    Args:
        nan_reward: mode of the NaN/inf reward guard; it fires on the first such step.
        collapse: mode of the reward-collapse guard.
        tool_skip: mode of the guard for episodes that stop searching (see ``tool_skip_drop``).
        all_truncated: mode of the guard for steps where every completion is truncated.
        nonfinite_grad: mode of the guard for NaN/inf gradients: ``"warn"`` and ``"stop"`` both drop the step's
            gradients (the weights stay as they were); ``"stop"`` then ends training; ``"off"`` lets the optimizer
            apply them.
        patience: consecutive logged steps that the collapse and truncation conditions must hold; the tool-skip
            guard's rolling window, in logged steps.
        collapse_threshold: the reward at or below which a step counts towards collapse (once the reward has been
            above it).
        tool_skip_drop: how far the rolling share of searching episodes may fall below its best before the
            tool-skip guard fires (0.3: from 0.9 to 0.6, say); a share of 0 always fires.

    Raises:
        ValueError: a mode is not one of ``"off"``, ``"warn"``, ``"stop"``; ``patience`` is below 1;
            ``collapse_threshold`` is not finite; or ``tool_skip_drop`` is not in (0, 1].

    Example:
        >>> from transformers import TrainerControl, TrainerState
        >>> guard = TrainingGuardCallback(nan_reward="stop")
        >>> control = guard.on_log(None, TrainerState(global_step=3), TrainerControl(), logs={"reward": float("nan")})
        >>> control.should_training_stop, guard.events[0].guard, guard.events[0].step
        (True, 'nan_reward', 3)
    """

    def __init__(
        self,
        nan_reward: GuardMode = "warn",
        collapse: GuardMode = "warn",
        tool_skip: GuardMode = "warn",
        all_truncated: GuardMode = "warn",
        nonfinite_grad: GuardMode = "warn",
        patience: int = 5,
        collapse_threshold: float = 0.0,
        tool_skip_drop: float = 0.3,
    ) -> None:
        self.modes: dict[str, str] = {
            "nan_reward": nan_reward,
            "collapse": collapse,
            "tool_skip": tool_skip,
            "all_truncated": all_truncated,
            "nonfinite_grad": nonfinite_grad,
        }
        for name, mode in self.modes.items():
            if mode not in MODES:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, MODES))}; got {mode!r}.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1; got {patience!r}.")
        if not math.isfinite(collapse_threshold):
            raise ValueError(f"collapse_threshold must be a finite number; got {collapse_threshold!r}.")
        if not (isinstance(tool_skip_drop, (int, float)) and 0 < tool_skip_drop <= 1):
            raise ValueError(f"tool_skip_drop must be in (0, 1] (a fall in the share of searching episodes); got "
                             f"{tool_skip_drop!r}.")  # fmt: skip
        self.patience = patience
        self.collapse_threshold = float(collapse_threshold)
        self.tool_skip_drop = float(tool_skip_drop)
        self._search_window: deque[float] = deque(maxlen=patience)
        self._best_search_share: float | None = None
        self.events: list[GuardEvent] = []
        self._streaks = dict.fromkeys(self.modes, 0)
        self._best_reward: float | None = None
        self.skipped_steps = 0

    def on_pre_optimizer_step(
        self, args: TrainingArguments | None, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        optimizer = kwargs.get("optimizer")
        if self.modes["nonfinite_grad"] == "off" or optimizer is None:
            return control
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if all_finite(p.grad for p in params):
            return control
        for param in params:
            param.grad = None  # torch optimizers skip a parameter without a gradient: no update, no moment change
        self.skipped_steps += 1
        # state.global_step counts finished steps: the one being skipped is the next.
        self._fire("nonfinite_grad", "grad_norm", float("nan"), state.global_step + 1, state, control)
        return control

    def on_log(
        self,
        args: TrainingArguments | None,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        logs = logs or {}
        step = state.global_step
        # Each check is (metric, value, condition holds?); None leaves the streak as it is, for a log row without
        # the metric (the end-of-training summary, an evaluation) or, for collapse, a non-finite reward.
        reward, searched, clipped = logs.get(REWARD_KEY), logs.get(SEARCH_KEY), logs.get(CLIPPED_KEY)
        checks: dict[str, tuple[str, Any, bool | None]] = {
            "nan_reward": (REWARD_KEY, reward, not is_finite_number(reward) if REWARD_KEY in logs else None),
            "collapse": (REWARD_KEY, reward, self._collapsed(reward) if is_finite_number(reward) else None),
            "tool_skip": (SEARCH_KEY, searched, self._skipping(searched) if is_finite_number(searched) else None),
            "all_truncated": (CLIPPED_KEY, clipped, clipped >= 1 if is_finite_number(clipped) else None),
        }
        for guard, (metric, value, holds) in checks.items():
            if self.modes[guard] == "off" or holds is None:
                continue
            self._streaks[guard] = self._streaks[guard] + 1 if holds else 0
            # nan_reward fires at once; tool_skip's condition already spans a window of `patience` steps.
            needed = 1 if guard in ("nan_reward", "tool_skip") else self.patience
            if self._streaks[guard] == needed:  # once per streak: a long streak is one event, not one per step
                self._fire(guard, metric, value, step, state, control)
        return control

    @property
    def _window_share(self) -> float:
        return sum(self._search_window) / max(len(self._search_window), 1)

    def _skipping(self, searched: float) -> bool:
        """Whether the rolling share of searching episodes is 0 or has fallen by ``tool_skip_drop`` from its best."""
        self._search_window.append(float(searched))
        if len(self._search_window) < self.patience:
            return False
        share = sum(self._search_window) / self.patience
        self._best_search_share = share if self._best_search_share is None else max(self._best_search_share, share)
        return share == 0 or self._best_search_share - share >= self.tool_skip_drop

    def _collapsed(self, reward: float) -> bool:
        """Whether this step counts towards collapse; also tracks the best reward so far."""
        was_above = self._best_reward is not None and self._best_reward > self.collapse_threshold
        self._best_reward = reward if self._best_reward is None else max(self._best_reward, reward)
        return was_above and reward <= self.collapse_threshold

    def _fire(
        self, guard: str, metric: str, value: Any, step: int, state: TrainerState, control: TrainerControl
    ) -> None:
        action = self.modes[guard]
        number = float(value) if isinstance(value, (int, float)) else None  # None: logged as null (or not a number)
        shown = f"{number:.4g}" if number is not None else "null (NaN)" if value is None else repr(value)
        message = f"Step {step}: {_DESCRIPTIONS[guard].format(metric=metric, value=shown, self=self)}"
        if action == "stop":
            message += " Stopping training (guard mode 'stop')."
            # Every process sets the flag, so that all ranks leave the loop together.
            control.should_training_stop = True
        self.events.append(GuardEvent(guard, step, metric, number, action, message))
        if state.is_world_process_zero:
            logger.warning("[guard %s] %s", guard, message)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, agreed by all processes (with sharded gradients, one
    rank's NaN must skip the step on every rank). One device synchronisation per call.

    Example:
        >>> all_finite([torch.ones(2), torch.tensor([1.0, float("inf")])])
        False
    """
    flags = [torch.isfinite(t).all() for t in tensors]
    if flags:
        finite = torch.stack(flags).all().to(torch.int32)
    else:  # still takes part in the all-reduce below, on the device the collective expects
        finite = torch.ones((), dtype=torch.int32, device="cuda" if torch.cuda.is_available() else "cpu")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


_DESCRIPTIONS = {
    "nan_reward": (
        "`{metric}` is {value}. Check the reward functions for NaN/None returns (e.g. a dataset row without its "
        "gold answers); if the loss is NaN too, lower the learning rate or train in fp32/bf16 instead of fp16."
    ),
    "collapse": (
        "`{metric}` is {value}, at or below {self.collapse_threshold:g} for {self.patience} logged steps after "
        "having been above it (best {self._best_reward:.4g}): the policy may have collapsed. Try a lower learning "
        "rate, a larger KL coefficient (`beta`), a slower noise curriculum, or resume from an earlier checkpoint."
    ),
    "tool_skip": (
        "`{metric}` is {value}; over the last {self.patience} logged steps the share of episodes that search "
        "averaged {self._window_share:.3g}, against a best of {self._best_search_share:.3g} (tool-skip: it is 0, or "
        "fell by {self.tool_skip_drop:g} or more). Try a smaller "
        "noise p (noisy documents teach the policy that searching does not pay), questions that need retrieval, a "
        "prompt that shows the <search> tag, or check `search/invalid_actions_per_episode` for malformed searches."
    ),
    "all_truncated": (
        "`{metric}` is {value}: every completion hit `max_completion_length` for {self.patience} logged steps, so "
        "none ends with an answer. Raise `max_completion_length`, lower `max_turns` or the number of documents per "
        "search (observations take room), or check the EOS token."
    ),
    "nonfinite_grad": (
        "the gradients hold NaN or inf; this step was skipped and the weights are unchanged "
        "({self.skipped_steps} skipped so far). Once in a while is harmless; if it repeats, lower the learning rate, "
        "train in bf16 or fp32 rather than fp16, or try another attention kernel (`--attn_implementation eager`)."
    ),
}
