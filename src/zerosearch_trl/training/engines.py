"""The engines a training job uses: the one the policy trains against, and those its held-out questions are
scored against (a real engine over the same facts first, then the noise-free simulator, told the answers).

With the demo task and no ``--corpus``, a real engine indexes that task's own world: a default demo corpus of
another size holds other facts.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from zerosearch_trl.training.config import EngineArguments

logger = logging.getLogger(__name__)


def build_engines(settings: EngineArguments, task: Any = None) -> tuple[Any, Any]:
    """``(engine, heldout_engine)`` from ``settings`` (:func:`simulator_resolved`): the engine the policy trains
    against, and the yardstick of the held-out evaluation: the same settings without noise or cache, sharing the
    simulator's weights (and a hybrid's real engine); a real engine serves both as it is. With the demo ``task`` and
    no ``--corpus``, a BM25/dense engine indexes that task's own world (a default demo corpus of another size holds
    other facts)."""
    from zerosearch_trl.engines.factory import make_engine, make_simulator

    corpus = task_corpus(task, settings)
    if settings.engine not in ("simulated", "hybrid"):
        engine = make_engine(settings, corpus=corpus)
        if settings.engine == "remote":  # a server that is down, or refuses the key, fails here, not mid-rollout
            remote = getattr(engine, "engine", engine)  # inside the result cache, if any
            logger.info("The retrieval server answers: %s", remote.health())
        return engine, engine
    simulator = make_simulator(settings)
    engine = make_engine(settings, simulator=simulator, corpus=corpus)
    heldout = make_engine(replace(settings, cache_path=None), simulator=simulator, real=getattr(engine, "real", None))
    return engine, heldout


def simulator_resolved(engine_args: EngineArguments, model_args: Any) -> EngineArguments:
    """``engine_args`` with ``--simulator_model policy`` (a frozen copy of the initial policy, loaded on its own)
    replaced by the policy's model."""
    if engine_args.simulator_model != "policy":
        return engine_args
    return replace(engine_args, simulator_model=model_args.model_name_or_path or "default")


SIMULATOR_TOLD_ANSWER = "simulator_told_answer"
"""The held-out column scored against the noise-free simulator: it is told each gold answer, so an upper bound."""


def heldout_engines(
    engine: Any, heldout_engine: Any, task: Any, engine_args: EngineArguments, names: str | None = None
) -> dict[str, Any]:
    """The engines the held-out questions are scored against, the yardstick first: those ``names``
    (``--heldout_engines``) when given, else a real engine over the same facts (the engine itself when it is real,
    a hybrid's real part, BM25 over the demo corpus for the demo task), then the noise-free simulator, labelled
    :data:`SIMULATOR_TOLD_ANSWER`: it writes useful documents from the gold answer, so its score is an upper bound,
    not a measure of search."""
    from zerosearch_trl.engines.base import engine_kind
    from zerosearch_trl.training.config import heldout_engine_names

    if names:
        return {
            SIMULATOR_TOLD_ANSWER if name == "simulated" else name: named_engine(
                name, engine, heldout_engine, task, engine_args
            )
            for name in heldout_engine_names(names)
        }
    if engine_kind(engine) == "real":
        return {engine.name: engine}
    engines: dict[str, Any] = {}
    real = getattr(engine, "real", None)
    if real is not None:
        engines[real.name] = real
    elif task is not None:
        # The demo task's own world, whatever --corpus the simulator was given: its questions ask those facts.
        engines["bm25"] = named_engine("bm25", engine, heldout_engine, task, replace(engine_args, corpus=None))
    else:
        logger.warning(
            "The held-out questions are scored against the simulator only, which is told their gold answers: an "
            "upper bound. Train with --engine hybrid (a real engine over the same facts) for a real yardstick."
        )
    engines[SIMULATOR_TOLD_ANSWER] = getattr(heldout_engine, "simulated", heldout_engine)
    return engines


def named_engine(name: str, engine: Any, heldout_engine: Any, task: Any, engine_args: EngineArguments) -> Any:
    """The held-out engine ``name``: the training engine's own (or a hybrid's part) when it is that engine, noise
    free and uncached, else one built from the engine flags (a simulator loads its model; an index covers
    ``--corpus``, or the demo task's world)."""
    from zerosearch_trl.engines.base import engine_kind
    from zerosearch_trl.engines.factory import make_engine

    simulated = getattr(heldout_engine, "simulated", heldout_engine)
    if name == "simulated" and engine_kind(simulated) == "simulated":
        return simulated
    for candidate in (engine, getattr(engine, "real", None)):
        if candidate is not None and engine_kind(candidate) == "real" and candidate.name == name:
            return candidate
    settings = replace(engine_args, engine=name, cache_path=None, noise_prob=0.0, save_index=None)
    return make_engine(settings, corpus=task_corpus(task, settings))


def task_corpus(task: Any, settings: EngineArguments) -> Any:
    """The demo task's own passages, for an index built without ``--corpus`` (``None`` otherwise)."""
    return task.corpus if task is not None and not settings.corpus else None
