"""Where a rollout's randomness comes from: one place per (optimisation step, process, rollout within the step).

The engine's draws (useful or noisy; real or simulated) restart there, and a turn generator's sampling seed derives
from it, so processes draw apart, a run resumed at a step draws what an uninterrupted one did, and the scheduler's
timing reaches neither (each search and each turn then keys its own draw: see
:class:`~zerosearch_trl.engines.base.RequestDraws` and :func:`~zerosearch_trl.generation.base.derive_seed`).
"""

from __future__ import annotations

from typing import Any

from zerosearch_trl.engines.base import reseed_engine
from zerosearch_trl.generation.base import derive_seed


class RolloutSeeds:
    """Counts the rollouts of each step and hands out their seeds.

    TRL generates more than once per optimisation step when ``steps_per_generation`` is below the accumulation
    steps, and an evaluation's batches generate at a training step: each such rollout draws anew. Training and
    evaluation count apart, so that a run resumed at a step (which does not redo that step's evaluation) draws what an
    uninterrupted one did.

    Example:
        >>> seeds = RolloutSeeds()
        >>> seeds.next_call(step=3, training=True), seeds.next_call(step=3, training=True)
        (0, 1)
        >>> seeds.next_call(step=3, training=False), seeds.next_call(step=4, training=True)
        ('eval0', 0)
    """

    def __init__(self) -> None:
        self._last = {True: (-1, 0), False: (-1, 0)}  # per mode: (step, rollouts made at it - 1)

    def next_call(self, *, step: int, training: bool) -> int | str:
        """This rollout's place in its step: ``0, 1, ...`` in training, ``"eval0", "eval1", ...`` in evaluation."""
        last_step, count = self._last[training]
        count = count + 1 if last_step == step else 0
        self._last[training] = (step, count)
        return count if training else f"eval{count}"

    def start(self, engine: Any, trainer: Any) -> int:
        """Restart ``engine``'s draws for the trainer's next rollout (where the engine has ``reseed``) and return the
        policy's sampling seed for it (a turn generator derives each turn's own from it)."""
        step, rank = trainer.state.global_step, trainer.accelerator.process_index
        call = self.next_call(step=step, training=trainer.model.training)
        reseed_engine(engine, step=step, rank=rank, call=call)
        return derive_seed(trainer.args.seed, step, rank, call)
