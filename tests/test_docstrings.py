"""The examples in the public docstrings run (those that need a model or a server are marked +SKIP)."""

import doctest
import importlib

import pytest

MODULES = [
    "zerosearch_trl",
    "zerosearch_trl.answers",
    "zerosearch_trl.protocol",
    "zerosearch_trl.prompts",
    "zerosearch_trl.rewards",
    "zerosearch_trl.demo",
    "zerosearch_trl.models",
    "zerosearch_trl.generation.base",
    "zerosearch_trl.engines.base",
    "zerosearch_trl.engines.simulated",
    "zerosearch_trl.engines.corpus",
    "zerosearch_trl.engines.bm25",
    "zerosearch_trl.engines.dense",
    "zerosearch_trl.engines.remote",
    "zerosearch_trl.engines.hybrid",
    "zerosearch_trl.engines.web",
    "zerosearch_trl.engines.server",
    "zerosearch_trl.engines.factory",
    "zerosearch_trl.environment",
    "zerosearch_trl.rollout.loop",
    "zerosearch_trl.rollout.episode",
    "zerosearch_trl.rollout.registry",
    "zerosearch_trl.evaluation.loop",
    "zerosearch_trl.evaluation.result",
    "zerosearch_trl.evaluation.report",
    "zerosearch_trl.training.schedules",
    "zerosearch_trl.training.curriculum",
    "zerosearch_trl.training.logs",
    "zerosearch_trl.training.report",
    "zerosearch_trl.training.guards",
    "zerosearch_trl.training.reinforce",
    "zerosearch_trl.training.ppo",
    "zerosearch_trl.training.ppo_config",
    "zerosearch_trl.rollout.policy",
    "zerosearch_trl.rollout.metrics",
    "zerosearch_trl.training.config",
    "zerosearch_trl.training.job",
    "zerosearch_trl.training.summary",
    "zerosearch_trl.training.checkpoints",
    "zerosearch_trl.simulator.sft",
    "zerosearch_trl.simulator.check",
    "zerosearch_trl.commands.parsing",
    "zerosearch_trl.commands.train",
    "zerosearch_trl.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
