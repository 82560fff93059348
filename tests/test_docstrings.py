"""The examples in the public docstrings run (those that need a model or a server are marked +SKIP)."""

import doctest
import importlib

import pytest

MODULES = [
    "zerosearch_trl",
    "zerosearch_trl.protocol",
    "zerosearch_trl.prompts",
    "zerosearch_trl.rewards",
    "zerosearch_trl.demo",
    "zerosearch_trl.engines.base",
    "zerosearch_trl.engines.simulated",
    "zerosearch_trl.engines.corpus",
    "zerosearch_trl.engines.bm25",
    "zerosearch_trl.engines.dense",
    "zerosearch_trl.engines.remote",
    "zerosearch_trl.engines.hybrid",
    "zerosearch_trl.engines.web",
    "zerosearch_trl.serve",
    "zerosearch_trl.environment",
    "zerosearch_trl.generation.base",
    "zerosearch_trl.report",
    "zerosearch_trl.guards",
    "zerosearch_trl.curriculum",
    "zerosearch_trl.models",
    "zerosearch_trl.rollout",
    "zerosearch_trl.evaluation",
    "zerosearch_trl.simulator_sft",
    "zerosearch_trl.simulator_check",
    "zerosearch_trl.reinforce",
    "zerosearch_trl.ppo",
    "zerosearch_trl.cli",
    "zerosearch_trl.engines.factory",
    "zerosearch_trl.train",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
