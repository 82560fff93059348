"""The examples in the public docstrings run (those that need a model or a server are marked +SKIP), in every
module of the package: a new module's examples are tested without being listed anywhere."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import zerosearch_trl

MODULES = sorted(module.name for module in pkgutil.walk_packages(zerosearch_trl.__path__, "zerosearch_trl."))


def test_every_module_is_collected():
    assert {"zerosearch_trl.generation.transformers", "zerosearch_trl.training.warmstart", "zerosearch_trl.cli"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", ["zerosearch_trl", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runnable = [
        line
        for line in inspect.getsource(module).splitlines()
        if line.lstrip().startswith(">>> ") and "doctest: +SKIP" not in line and not line.lstrip()[4:].startswith("#")
    ]
    result = doctest.testmod(module)
    assert result.failed == 0
    assert (result.attempted > 0) == bool(runnable)  # examples outside docstrings would not run: none are
